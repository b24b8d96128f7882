"""The project's audit log (filtered, and its hash chain verified), its API keys and its members."""

from __future__ import annotations

import json
from datetime import date
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from kifabrik import accounts
from kifabrik.errors import KifabrikError
from kifabrik.serve import keys as api_keys
from kifabrik.ui import i18n
from kifabrik.ui.pages.records import paginate
from kifabrik.ui.web import Page, PageError, ProjectPage, redirect

router = APIRouter()
AUDIT_PER_PAGE = 100
FILTERS = ("action", "actor", "subject", "from", "to")


# ---------------------------------------------------------------------- audit log
def _day(text: str, field: str) -> date | None:
    if not text:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise PageError(400, "Error", f"{field}: {text!r} is not a date", hint="write it as YYYY-MM-DD") from None


def _audit(ctx: Page, request: Request, *, verified: list[str] | None = None) -> HTMLResponse:
    assert ctx.ws is not None
    q = {k: request.query_params.get(k, "").strip() for k in FILTERS}
    start, end = _day(q["from"], "from"), _day(q["to"], "to")
    entries = ctx.ws.catalog.audit_entries()
    actions = sorted({e.action for e in entries})
    subject = q["subject"].lower()

    def keep(e: Any) -> bool:
        day = e.ts.date()
        return ((not q["action"] or e.action == q["action"]) and (not q["actor"] or q["actor"].lower() in e.actor.lower())
                and (not subject or subject in (e.subject or "").lower()
                     or subject in json.dumps(e.details, ensure_ascii=False, default=str).lower())
                and (start is None or day >= start) and (end is None or day <= end))

    shown = [e for e in reversed(entries) if keep(e)]
    pager = paginate(request, shown, AUDIT_PER_PAGE)
    rows = [(e, json.dumps(e.details, ensure_ascii=False, default=str, sort_keys=True)) for e in pager.items]
    return ctx.render("admin_audit.html", pager=pager, rows=rows, q=q, actions=actions, verified=verified,
                      total=len(entries))


@router.get("/p/{project}/audit", response_class=HTMLResponse)
def audit(ctx: ProjectPage, request: Request) -> HTMLResponse:
    return _audit(ctx, request)


@router.post("/p/{project}/audit/verify", response_class=HTMLResponse)
async def audit_verify(ctx: ProjectPage, request: Request) -> HTMLResponse:
    """Re-compute the hash chain (of the whole installation: one chain links every project's entries)."""
    await ctx.form("read")
    assert ctx.ws is not None
    return _audit(ctx, request, verified=ctx.ws.catalog.verify_audit())


# ---------------------------------------------------------------------- API keys
def _servable(ctx: Page) -> list[Any]:
    """The names a key can be limited to (what `create_key` accepts), newest version of each."""
    assert ctx.ws is not None
    latest: dict[str, Any] = {}
    for kind in api_keys.SERVABLE_KINDS:
        for r in ctx.ws.catalog.list_artifacts(kind):
            latest[r.name] = r
    return sorted(latest.values(), key=lambda r: r.name)


def _keys(ctx: Page, *, status: int = 200, error: KifabrikError | None = None,
          values: dict[str, Any] | None = None) -> HTMLResponse:
    assert ctx.ws is not None
    listed = sorted(api_keys.list_keys(ctx.ws), key=lambda k: k.created_at, reverse=True)
    return ctx.render("admin_keys.html", status=status, keys=listed, models=_servable(ctx), error=error,
                      values=values or {"models": []})


@router.get("/p/{project}/keys", response_class=HTMLResponse)
def keys(ctx: ProjectPage) -> HTMLResponse:
    return _keys(ctx)


@router.post("/p/{project}/keys", response_class=HTMLResponse)
async def key_create(ctx: ProjectPage) -> HTMLResponse:
    """Create a key and show it this once (it is stored only as a hash)."""
    form = await ctx.form("work")
    assert ctx.ws is not None
    models = [str(m) for m in form.getlist("models")]
    rate, label = str(form.get("rate_limit") or "").strip(), str(form.get("label") or "").strip()
    try:
        limit = api_keys.parse_rate_limit(rate) if rate else None
        record, secret = api_keys.create_key(ctx.ws, ["*"] if "*" in models else models, rate_limit=limit,
                                             name=label or None, actor=ctx.actor())
    except KifabrikError as exc:
        return _keys(ctx, status=400, error=exc, values={"models": models, "rate_limit": rate, "label": label})
    response = ctx.render("admin_key_created.html", key=record, secret=secret)
    response.headers["Cache-Control"] = "no-store"
    return response


@router.post("/p/{project}/keys/{key_id}/revoke")
async def key_revoke(ctx: ProjectPage, key_id: str) -> Response:
    await ctx.form("work")
    assert ctx.ws is not None
    api_keys.revoke_key(ctx.ws, key_id, actor=ctx.actor())
    return redirect(ctx.url("/keys"))


# ---------------------------------------------------------------------- members
def _members(ctx: Page, *, status: int = 200, error: KifabrikError | None = None,
             values: dict[str, str] | None = None) -> HTMLResponse:
    users = accounts.list_users(ctx.root, ctx.project)
    return ctx.render("admin_members.html", status=status, users=users, error=error,
                      values=values or {"role": "viewer"})


@router.get("/p/{project}/members", response_class=HTMLResponse)
def members(ctx: ProjectPage) -> HTMLResponse:
    return _members(ctx)


@router.post("/p/{project}/members", response_class=HTMLResponse)
async def member_grant(ctx: ProjectPage) -> Response:
    """Give an existing user a role in this project (or change the role they have)."""
    form = await ctx.form("manage")
    assert ctx.project is not None
    user, role = str(form.get("user") or "").strip().lower(), str(form.get("role") or "")
    try:
        if not user:
            raise KifabrikError("no user name was given", hint="type the user name of an existing account")
        if user == ctx.user.name and role != "admin":
            raise KifabrikError("you cannot take the admin role from yourself",
                                hint="another administrator of the project can change your role")
        try:
            accounts.get_user(ctx.root, user)
        except KifabrikError:
            raise KifabrikError(f"there is no user {user!r}",
                                hint="an administrator of the installation creates accounts: "
                                     "`kifabrik users add NAME`") from None
        accounts.grant(ctx.root, user, ctx.project, role, actor=ctx.actor())
    except KifabrikError as exc:
        return _members(ctx, status=400, error=exc, values={"user": user, "role": role})
    return redirect(ctx.url("/members"))


@router.post("/p/{project}/members/remove", response_class=HTMLResponse)
async def member_remove(ctx: ProjectPage) -> Response:
    form = await ctx.form("manage")
    assert ctx.project is not None
    user = str(form.get("user") or "")
    try:
        if user == ctx.user.name:
            raise KifabrikError("you cannot remove yourself from the project",
                                hint="another administrator of the project can remove you")
        accounts.revoke(ctx.root, user, ctx.project, actor=ctx.actor())
    except KifabrikError as exc:
        return _members(ctx, status=400, error=exc)
    return redirect(ctx.url("/members"))


i18n.add({
    "Filter": "Filtern",
    "Action": "Aktion",
    "Actor": "Wer",
    "Subject": "Gegenstand",
    "Subject or details contain": "Gegenstand oder Details enthalten",
    "From (date)": "Von (Datum)",
    "To (date)": "Bis (Datum)",
    "all": "alle",
    "Show": "Anzeigen",
    "Reset": "Zurücksetzen",
    "Time (UTC)": "Zeit (UTC)",
    "Decision": "Entscheidung",
    "Details": "Details",
    "No: {n}": "Nr.: {n}",
    "No entries match the filter.": "Keine Einträge passen zum Filter.",
    "{shown} of {total} entries match.": "{shown} von {total} Einträgen passen.",
    "Verify the chain": "Kette prüfen",
    "Each entry's hash covers the entry before it, so a changed, removed or reordered entry breaks the chain. The check covers the whole installation's chain, the entries of every project, because all projects share one chain.":
        "Der Hash jedes Eintrags umfasst den Eintrag davor; ein geänderter, entfernter oder umsortierter Eintrag bricht daher die Kette. Die Prüfung umfasst die Kette der ganzen Installation mit den Einträgen aller Projekte, weil alle Projekte eine Kette teilen.",
    "The audit log is intact.": "Das Audit-Protokoll ist unversehrt.",
    "The audit log has problems:": "Das Audit-Protokoll hat Probleme:",
    "Key": "Schlüssel",
    "Label": "Bezeichnung",
    "Rate limit": "Ratenbegrenzung",
    "Revoked": "Widerrufen",
    "active": "aktiv",
    "revoked": "widerrufen",
    "Revoke": "Widerrufen",
    "Revoke this key? Programs using it stop working at once.":
        "Diesen Schlüssel widerrufen? Programme, die ihn verwenden, funktionieren sofort nicht mehr.",
    "No API keys yet.": "Noch keine API-Schlüssel.",
    "Create a key": "Schlüssel erstellen",
    "Models the key may use": "Modelle, die der Schlüssel verwenden darf",
    "all models of the project": "alle Modelle des Projekts",
    "Requests per minute (empty: unlimited)": "Anfragen pro Minute (leer: unbegrenzt)",
    "unlimited": "unbegrenzt",
    "{n}/min": "{n}/min",
    "Create": "Erstellen",
    "Your role can see the keys; creating and revoking them needs the engineer role.":
        "Ihre Rolle darf die Schlüssel sehen; zum Erstellen und Widerrufen ist die Rolle Entwicklung nötig.",
    "The key could not be created": "Der Schlüssel konnte nicht erstellt werden",
    "New API key": "Neuer API-Schlüssel",
    "Copy the key now: it is shown only this once and cannot be shown again (only its hash is stored).":
        "Kopieren Sie den Schlüssel jetzt: Er wird nur dieses eine Mal angezeigt (gespeichert wird nur sein Hash).",
    "Send it as the header Authorization: Bearer KEY.": "Senden Sie ihn im Header Authorization: Bearer KEY.",
    "Back to the API keys": "Zurück zu den API-Schlüsseln",
    "Member": "Mitglied",
    "User": "Benutzer",
    "Display name": "Anzeigename",
    "Remove": "Entfernen",
    "Remove {user} from the project?": "{user} aus dem Projekt entfernen?",
    "Grant a role": "Rolle vergeben",
    "User name of an existing account": "Benutzername eines bestehenden Kontos",
    "Grant": "Vergeben",
    "Only administrators of the project add and remove members.":
        "Nur Administratorinnen und Administratoren des Projekts fügen Mitglieder hinzu oder entfernen sie.",
    "The change was refused": "Die Änderung wurde abgelehnt",
    "disabled": "deaktiviert",
    "you": "Sie",
    "viewer: reads everything; engineer: also imports, trains, evaluates and manages API keys; approver: also approves releases; admin: also manages members.":
        "Betrachter: liest alles; Entwicklung: importiert, trainiert, evaluiert und verwaltet API-Schlüssel; Freigabe: gibt außerdem Releases frei; Administration: verwaltet außerdem Mitglieder.",
})
