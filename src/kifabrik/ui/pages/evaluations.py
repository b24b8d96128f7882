"""Evaluations: the project's evaluation records, start one as a job, one record's metrics and report, compare two.

Every figure is shown as the evaluation stage recorded it: the value, the item count n and the
95 % interval (`results.json`, `stats`). The HTML report the stage wrote is shown in a sandboxed
frame: its own inline styles apply, nothing in it runs.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, NamedTuple

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, Response
from starlette.concurrency import run_in_threadpool

from kifabrik.catalog import ArtifactRecord
from kifabrik.config import load_yaml, resolve_path
from kifabrik.errors import KifabrikError, NotFoundError
from kifabrik.ui import i18n, jobs
from kifabrik.ui.pages.jobs import runnable, when
from kifabrik.ui.web import Page, ProjectPage, redirect
from kifabrik.workspace import Workspace

router = APIRouter()
KIND = "evaluation"
#: the task files shipped with kifabrik (`kifabrik eval MODEL --task kifabrik:...`)
TASK_FOLDERS = ("evaluate/data/tasks", "recipes/tasks")
#: the report's own inline CSS applies; no script, form, frame or request to anywhere
REPORT_CSP = "sandbox; default-src 'none'; style-src 'unsafe-inline'; img-src data:"
SHOWN_METRICS = 4


class Choice(NamedTuple):
    """One entry of the task select: `task:kifabrik:PATH` or `suite:NAME`, and what a person reads."""

    value: str
    label: str


def task_choices() -> list[Choice]:
    """The bundled task files and the quality suites the CLI offers."""
    from kifabrik.evaluate.suites import ORDER, get_suite, suite_names

    out = []
    for folder in TASK_FOLDERS:
        for path in sorted(resolve_path(f"kifabrik:{folder}").glob("*.yaml")):
            spec = load_yaml(path) or {}
            label = f"{spec.get('name', path.stem)}: {spec.get('description') or ''}".strip(": ")
            if len(label) > 110:
                label = label[:110].rsplit(" ", 1)[0].rstrip(",;:") + " …"
            out.append(Choice(f"task:kifabrik:{folder}/{path.name}", label))
    names = sorted(suite_names(), key=lambda n: ORDER.index(n) if n in ORDER else len(ORDER))
    out += [Choice(f"suite:{n}", f"Suite {n}: {get_suite(n).title}") for n in names]
    out.append(Choice("suite:all", "Suite all: every quality suite"))
    return out


def results_of(ws: Workspace, rec: ArtifactRecord) -> dict[str, Any]:
    """The evaluation's results.json ({} when the record has none)."""
    try:
        data = json.loads((ws.path(rec) / "results.json").read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def recorded_stats(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """n and 95 % interval per metric key: results.json's `stats`, else those its tasks and suites recorded."""
    stats: dict[str, dict[str, Any]] = {}
    for task in results.get("tasks", []):
        stats.update({f"task.{task.get('name')}.{k}": v for k, v in (task.get("stats") or {}).items()})
    for suite in results.get("suites", []):
        stats.update(suite.get("stats") or {})
    stats.update(results.get("stats") or {})
    return stats


def interval(stat: dict[str, Any] | None) -> str:
    """`0.503–0.733` (the recorded 95 % interval), or empty."""
    if not stat or stat.get("ci_low") is None or stat.get("ci_high") is None:
        return ""
    return f"{stat['ci_low']:.3f}–{stat['ci_high']:.3f}"


def number(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "–" if value is None else str(value)
    return "–" if math.isnan(value) else f"{value:.3f}"


def main_metrics(results: dict[str, Any]) -> list[str]:
    """The metrics a list shows first: each task's main metric, then the suites' metrics."""
    keys = [f"task.{t['name']}.{t['main']}" for t in results.get("tasks", []) if t.get("main")]
    keys += [k for s in results.get("suites", []) for k in s.get("metrics", {})]
    seen = [k for k in dict.fromkeys(keys) if k in results.get("metrics", {})]
    return seen or list(results.get("metrics", {}))


def metric_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per metric: value, n, interval, and the MISSION KI thresholds it is judged by."""
    stats, thresholds = recorded_stats(results), results.get("thresholds", {})
    rows = []
    for key, value in results.get("metrics", {}).items():
        stat = stats.get(key) or {}
        gate = thresholds.get(key)
        rows.append({"key": key, "value": number(value), "n": stat.get("n"), "interval": interval(stat),
                     "gate": gate, "note": stat.get("why") if stat.get("meaningful") is False else None})
    return rows


def _summary(ws: Workspace, rec: ArtifactRecord) -> dict[str, Any]:
    results = results_of(ws, rec)
    stats = recorded_stats(results) or rec.meta.get("stats") or {}
    metrics = results.get("metrics") or rec.meta.get("metrics") or {}
    shown = [(k, number(metrics[k]), (stats.get(k) or {}).get("n"), interval(stats.get(k)))
             for k in main_metrics({**results, "metrics": metrics})[:SHOWN_METRICS]]
    tasks = [*(rec.meta.get("tasks") or []), *(f"suite {s}" for s in rec.meta.get("suites") or [])]
    return {"rec": rec, "model": rec.meta.get("model") or results.get("model", {}).get("ref"), "tasks": tasks,
            "metrics": shown}


def _list_page(ctx: Page, *, status: int = 200, errors: dict[str, str] | None = None,
               values: dict[str, Any] | None = None) -> HTMLResponse:
    records = list(reversed(ctx.ws.catalog.list_artifacts(KIND)))
    return ctx.render("work_evaluations.html", status=status, title="Evaluations",
                      evaluations=[_summary(ctx.ws, r) for r in records], models=runnable(ctx.ws),
                      choices=task_choices(), errors=errors or {}, values={"limit": "20", **(values or {})})


@router.get("/p/{project}/evaluations", response_class=HTMLResponse)
def evaluations(ctx: ProjectPage) -> HTMLResponse:
    return _list_page(ctx)


def eval_argv(ws: Workspace, model: str, selected: list[str], limit: str) -> tuple[list[str], str, dict[str, str]]:
    """`kifabrik eval MODEL --task ... --suite ... --limit N`, its title, and the problems per field.

    The inputs get the check `kifabrik eval` makes before it loads a model (`evaluate.api.prepare`),
    so a bad choice is named on the form instead of failing in the background.
    """
    from kifabrik.evaluate.api import EvalOptions, prepare, target_record

    errors: dict[str, str] = {}
    target = None
    try:
        target = target_record(ws, model) if model else None
    except KifabrikError as exc:
        errors["model"] = exc.message
    if target is None and "model" not in errors:
        errors["model"] = "Choose what to evaluate."
    known = {c.value for c in task_choices()}
    tasks = [v.removeprefix("task:") for v in selected if v in known and v.startswith("task:")]
    suites = [v.removeprefix("suite:") for v in selected if v in known and v.startswith("suite:")]
    if not tasks and not suites:
        errors["task"] = "Choose at least one task or suite."
    n: int | None = None
    if limit.strip():
        try:
            n = int(limit)
            if n < 1:
                raise ValueError
        except ValueError:
            errors["limit"] = "Enter a whole number of at least 1."
    if errors:
        return [], "", errors
    try:
        prepare(ws, EvalOptions(tasks=tasks, suites=suites, limit=n))
    except KifabrikError as exc:
        return [], "", {"task": exc.message}
    assert target is not None
    argv = ["eval", target.id, *(a for t in tasks for a in ("--task", t)), *(a for s in suites for a in ("--suite", s))]
    if n is not None:
        argv += ["--limit", str(n)]
    what = ", ".join([Path(t).stem for t in tasks] + suites)
    return argv, f"{target.ref}: {what}", {}


@router.post("/p/{project}/evaluations/run")
async def start_evaluation(ctx: ProjectPage) -> Response:
    form = await ctx.form("work")
    model, selected, limit = str(form.get("model") or ""), [str(v) for v in form.getlist("task")], str(form.get("limit") or "")
    argv, title, errors = await run_in_threadpool(eval_argv, ctx.ws, model, selected, limit)
    if errors:
        return _list_page(ctx, status=400, errors=errors, values={"model": model, "task": selected, "limit": limit})
    job = jobs.start_job(ctx.ws, project=ctx.project or "", user=ctx.user.name, kind="eval", title=title, argv=argv)
    return redirect(ctx.url(f"/jobs/{job.id}"))


def _evaluation(ctx: Page, ref: str) -> ArtifactRecord:
    return ctx.ws.catalog.get_artifact(ref, KIND)  # NotFoundError (404) for another project's record too


def overlap(a: dict[str, Any] | None, b: dict[str, Any] | None) -> bool | None:
    """Whether two recorded 95 % intervals overlap; None when one is missing."""
    if not interval(a) or not interval(b):
        return None
    assert a is not None and b is not None
    return bool(a["ci_low"] <= b["ci_high"] and b["ci_low"] <= a["ci_high"])


@router.get("/p/{project}/evaluations/compare", response_class=HTMLResponse)
def compare(ctx: ProjectPage, a: str = "", b: str = "") -> HTMLResponse:
    if not a or not b:
        return _list_page(ctx, status=400, errors={"compare": "Choose two evaluations to compare."})
    ra, rb = _evaluation(ctx, a), _evaluation(ctx, b)
    xa, xb = results_of(ctx.ws, ra), results_of(ctx.ws, rb)
    ma, mb = xa.get("metrics", {}), xb.get("metrics", {})
    sa, sb = recorded_stats(xa), recorded_stats(xb)
    rows = []
    for key in dict.fromkeys([*ma, *mb]):
        va, vb = ma.get(key), mb.get(key)
        diff = vb - va if isinstance(va, int | float) and isinstance(vb, int | float) else None
        rows.append({"key": key, "a": number(va), "a_ci": interval(sa.get(key)), "a_n": (sa.get(key) or {}).get("n"),
                     "b": number(vb), "b_ci": interval(sb.get(key)), "b_n": (sb.get(key) or {}).get("n"),
                     "diff": None if diff is None else f"{diff:+.3f}", "sign": 0 if not diff else (1 if diff > 0 else -1),
                     "overlap": overlap(sa.get(key), sb.get(key))})
    return ctx.render("work_compare.html", title="Compare evaluations", a=ra, b=rb, ma=xa.get("model", {}),
                      mb=xb.get("model", {}), rows=rows)


@router.get("/p/{project}/evaluations/{ref}", response_class=HTMLResponse)
def evaluation(ctx: ProjectPage, ref: str) -> HTMLResponse:
    rec = _evaluation(ctx, ref)
    results = results_of(ctx.ws, rec)
    return ctx.render("work_evaluation.html", title="Evaluation", rec=rec, results=results,
                      rows=metric_rows(results), has_report=(ctx.ws.path(rec) / "report.html").is_file(),
                      verdict=results.get("verdict", {}), when=when)


@router.get("/p/{project}/evaluations/{ref}/report")
def report(ctx: ProjectPage, ref: str) -> Response:
    rec = _evaluation(ctx, ref)
    path = ctx.ws.path(rec) / "report.html"
    if not path.is_file():
        raise NotFoundError(f"evaluation {rec.ref} has no report")
    return HTMLResponse(path.read_text(encoding="utf-8"), headers={"Content-Security-Policy": REPORT_CSP})


i18n.add({
    "Evaluation": "Evaluierung",
    "Model": "Modell",
    "Tasks": "Aufgaben",
    "Main metrics": "Wichtigste Kennzahlen",
    "No evaluations yet.": "Noch keine Evaluierungen.",
    "Start an evaluation": "Evaluierung starten",
    "Model, adapter or Fach-LLM": "Modell, Adapter oder Fach-LLM",
    "Tasks and suites": "Aufgaben und Suiten",
    "At most this many items per task": "Höchstens so viele Fragen je Aufgabe",
    "Start evaluation": "Evaluierung starten",
    "The evaluation runs as a job; you can follow it on the job page.":
        "Die Evaluierung läuft als Auftrag; Sie können ihn auf der Auftragsseite verfolgen.",
    "Choose what to evaluate.": "Bitte wählen, was evaluiert werden soll.",
    "Choose at least one task or suite.": "Bitte mindestens eine Aufgabe oder Suite wählen.",
    "Enter a whole number of at least 1.": "Bitte eine ganze Zahl ab 1 eingeben.",
    "Compare two evaluations": "Zwei Evaluierungen vergleichen",
    "Evaluation A": "Evaluierung A",
    "Evaluation B": "Evaluierung B",
    "Compare": "Vergleichen",
    "Two evaluations are needed to compare.": "Für einen Vergleich braucht es zwei Evaluierungen.",
    "Choose two evaluations to compare.": "Bitte zwei Evaluierungen zum Vergleich wählen.",
    "Compare evaluations": "Evaluierungen vergleichen",
    "Metric": "Kennzahl",
    "Value": "Wert",
    "95 % interval": "95-%-Intervall",
    "Thresholds (MISSION KI)": "Schwellen (MISSION KI)",
    "need {need}": "Schutzbedarf {need}",
    "higher is better": "höher ist besser",
    "lower is better": "niedriger ist besser",
    "Metrics": "Kennzahlen",
    "Report": "Bericht",
    "The report of this evaluation": "Der Bericht dieser Evaluierung",
    "This evaluation has no HTML report.": "Diese Evaluierung hat keinen HTML-Bericht.",
    "Open the report on its own": "Bericht einzeln öffnen",
    "MISSION KI verdict": "MISSION-KI-Bewertung",
    "Dimension": "Dimension",
    "Difference (B − A)": "Unterschied (B − A)",
    "Intervals overlap": "Intervalle überlappen",
    "yes": "ja",
    "no": "nein",
    "Overlapping intervals: the difference may be chance.":
        "Überlappende Intervalle: Der Unterschied kann Zufall sein.",
    "All evaluations": "Alle Evaluierungen",
    "not meaningful": "nicht aussagekräftig",
    "Baseline": "Vergleichsmodell",
})
