"""Releases with four eyes: an engineer requests a release, another user with the approver role decides.

Approving runs the release exactly as `kifabrik release` does (`kifabrik.release.release`, on the
project's scoped workspace, the approver as actor): usage policies and quality gates first. A
refusal by either is recorded on the request as `refused`, with the reason; a rejection by the
approver as `rejected`. The catalog refuses a decision by the requester, whatever the page shows,
and writes every request and decision to the audit log.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, Response
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from kifabrik.catalog.records import ReleaseRequestRecord
from kifabrik.errors import KifabrikError, NotFoundError
from kifabrik.ui import i18n
from kifabrik.ui.pages.jobs import runnable
from kifabrik.ui.web import Page, ProjectPage, redirect

router = APIRouter()
AUDIENCES = ("public", "internal")
#: what a person reads instead of a regular expression
FRIENDLY = {("name", "string_pattern_mismatch"): "Letters, digits, dot, underscore and hyphen only; start with a "
                                                 "letter or digit.",
            ("version", "string_pattern_mismatch"): "Letters, digits and . + _ - only, e.g. 1.0.0."}


def gate_text(gate: dict[str, Any]) -> str:
    """`task.werkstatt.acc ≥ 0.7` for a gate as a request stores it."""
    from kifabrik.release.gates import Gate

    return Gate.model_validate(gate).text()


def _gate(values: dict[str, str], errors: dict[str, str]) -> list[dict[str, Any]]:
    """The request form's one optional quality gate (metric, at least / at most, value) as ReleaseOptions takes it."""
    metric, bound, value = values["gate_metric"], values["gate_bound"], values["gate_value"].replace(",", ".")
    if not metric and not value:
        return []
    if not metric:
        errors["gate_metric"] = "Name the metric the gate checks."
        return []
    try:
        number = float(value)
    except ValueError:
        errors["gate_value"] = "Enter a number."
        return []
    return [{"max" if bound == "max" else "min": {"metric": metric, "value": number}}]


def _page(ctx: Page, *, status: int = 200, errors: dict[str, str] | None = None,
          values: dict[str, Any] | None = None) -> HTMLResponse:
    requests = ctx.ws.catalog.release_requests()
    requests.sort(key=lambda r: r.status != "pending")  # pending first; the catalog gives newest first
    targets = {r.id: r for r in runnable(ctx.ws)}
    names = {}
    for req in requests:
        rec = targets.get(req.artifact_id)
        if rec is None:
            try:
                rec = ctx.ws.catalog.get_artifact(req.artifact_id)
            except NotFoundError:
                rec = None
        names[req.id] = rec.ref if rec else req.artifact_id[:12]
    releases = list(reversed(ctx.ws.catalog.list_artifacts("release")))
    metrics = sorted({k for e in ctx.ws.catalog.list_artifacts("evaluation") for k in e.meta.get("metrics") or {}})
    return ctx.render("work_releases.html", status=status, title="Releases", requests=requests, target=names,
                      releases=releases, targets=list(targets.values()), audiences=AUDIENCES, metrics=metrics,
                      gate_text=gate_text,
                      errors=errors or {}, values={"audience": "public", **(values or {})})


@router.get("/p/{project}/releases", response_class=HTMLResponse)
def releases(ctx: ProjectPage) -> HTMLResponse:
    return _page(ctx)


@router.post("/p/{project}/releases/request")
async def request_release(ctx: ProjectPage) -> Response:
    """Record a release request (engineer and up); the options are checked as `kifabrik release` checks them."""
    from kifabrik.release.api import ReleaseOptions

    form = await ctx.form("work")
    values = {k: str(form.get(k) or "").strip() for k in ("artifact", "name", "version", "audience", "license",
                                                          "gate_metric", "gate_bound", "gate_value")}
    errors: dict[str, str] = {}
    gates = _gate(values, errors)
    target = None
    try:
        target = ctx.ws.catalog.get_artifact(values["artifact"]) if values["artifact"] else None
    except NotFoundError:
        pass
    if target is None or target.kind not in ("model", "adapter", "fach-llm"):
        errors["artifact"] = "Choose the model, adapter or Fach-LLM to release."
    options: dict[str, Any] = {"license": values["license"]} if values["license"] else {}
    if gates:
        options["gates"] = gates
    try:
        ReleaseOptions(name=values["name"], version=values["version"], audience=values["audience"], **options)
    except ValidationError as exc:
        for err in exc.errors():
            field = str(err["loc"][0]) if err["loc"] else "name"
            field = "gate_metric" if field == "gates" else field
            errors[field] = FRIENDLY.get((field, err["type"])) or str(err["msg"]).removeprefix("Value error, ")
    if errors:
        return _page(ctx, status=400, errors=errors, values=values)
    assert target is not None
    ctx.ws.catalog.request_release(target.id, name=values["name"], version=values["version"],
                                   audience=values["audience"], user=ctx.user.name, options=options)
    return redirect(ctx.url("/releases"))


def run_release(ctx: Page, req: ReleaseRequestRecord) -> ReleaseRequestRecord:
    """Release as `kifabrik release` does, on a request this user claimed; record the outcome on the
    request (released, or refused and why). Anything else hands the request back (pending)."""
    from kifabrik.release import ReleaseOptions, release

    try:
        try:
            opts = ReleaseOptions(name=req.name, version=req.version, audience=req.audience, **req.options)  # type: ignore[arg-type]
            rec = release(ctx.ws, req.artifact_id, opts, actor=ctx.actor())
        except KifabrikError as exc:  # a usage policy, a quality gate, or input the release stage refuses
            reason = exc.message + (f"\n{exc.hint}" if exc.hint else "")
            return ctx.ws.catalog.decide_release(req.id, user=ctx.user.name, status="refused", reason=reason,
                                                 claimed=True)
        return ctx.ws.catalog.decide_release(req.id, user=ctx.user.name, status="released", release_id=rec.id,
                                             claimed=True)
    except BaseException:
        ctx.ws.catalog.unclaim_release(req.id, user=ctx.user.name)
        raise


@router.post("/p/{project}/releases/{request_id}/approve")
async def approve(ctx: ProjectPage, request_id: str) -> Response:
    await ctx.form("approve")
    # the catalog refuses the requester (four eyes) and a request another approver took or closed
    req = await run_in_threadpool(ctx.ws.catalog.claim_release, request_id, user=ctx.user.name)
    await run_in_threadpool(run_release, ctx, req)
    return redirect(ctx.url(f"/releases#request-{request_id}"))


@router.post("/p/{project}/releases/{request_id}/reject")
async def reject(ctx: ProjectPage, request_id: str) -> Response:
    form = await ctx.form("approve")
    reason = str(form.get("reason") or "").strip()
    if not reason:
        raise KifabrikError("a rejection needs a reason", hint="write in the reason field why the release is rejected")
    ctx.ws.catalog.decide_release(request_id, user=ctx.user.name, status="rejected", reason=reason)
    return redirect(ctx.url(f"/releases#request-{request_id}"))


i18n.add({
    "Release requests": "Freigabeanträge",
    "Request a release": "Freigabe beantragen",
    "What to release": "Was freigegeben wird",
    "Release name": "Name der Freigabe",
    "Audience": "Empfängerkreis",
    "public": "öffentlich",
    "internal": "intern",
    "Licence (SPDX id, optional)": "Lizenz (SPDX-Kennung, optional)",
    "Default: the licence the model's documents state. Internal releases need LicenseRef-….":
        "Standard: die Lizenz aus den Dokumenten des Modells. Interne Freigaben brauchen LicenseRef-….",
    "Request release": "Freigabe beantragen",
    "Another user with the approver role decides (four eyes).":
        "Eine andere Person mit der Rolle Freigabe entscheidet (Vier-Augen-Prinzip).",
    "No release requests yet.": "Noch keine Freigabeanträge.",
    "No releases yet.": "Noch keine Freigaben.",
    "Requested by": "Beantragt von",
    "Decided by": "Entschieden von",
    "Reason": "Begründung",
    "pending": "offen",
    "approving": "wird freigegeben",
    "released": "freigegeben",
    "refused": "verweigert",
    "rejected": "abgelehnt",
    "Approve and release": "Genehmigen und freigeben",
    "Reject": "Ablehnen",
    "Reason for the rejection": "Grund der Ablehnung",
    "You requested this release; another approver decides.":
        "Sie haben diese Freigabe beantragt; eine andere Person mit Freigaberecht entscheidet.",
    "Waiting for an approver.": "Wartet auf eine Freigabe.",
    "Release": "Freigabe",
    "Choose the model, adapter or Fach-LLM to release.": "Bitte Modell, Adapter oder Fach-LLM zur Freigabe wählen.",
    "Nothing to release yet: train an adapter or register a model first.":
        "Noch nichts freizugeben: Bitte zuerst einen Adapter trainieren oder ein Modell registrieren.",
    "Licence": "Lizenz",
    "Quality gate (optional)": "Qualitätsschwelle (optional)",
    "Metric of the newest evaluation": "Kennzahl der neuesten Evaluierung",
    "at least (lower end of the 95 % interval)": "mindestens (untere Grenze des 95-%-Intervalls)",
    "at most (upper end of the 95 % interval)": "höchstens (obere Grenze des 95-%-Intervalls)",
    "Bound": "Grenze",
    "Name the metric the gate checks.": "Bitte die Kennzahl nennen, die die Schwelle prüft.",
    "Gate": "Schwelle",
    "Letters, digits and . + _ - only, e.g. 1.0.0.": "Nur Buchstaben, Ziffern und . + _ -, z. B. 1.0.0.",
    "Approving checks the usage policies and quality gates, then writes the release bundle.":
        "Die Genehmigung prüft Nutzungsrichtlinien und Qualitätsschwellen und schreibt dann das Freigabepaket.",
})
