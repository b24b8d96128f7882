"""A project's dashboard: its datasets, models, adapters, evaluations, releases and running jobs."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from kifabrik.ui.web import ProjectPage

router = APIRouter()
#: the sections of the dashboard: (artifact kind, English heading, page listing all of them)
SECTIONS = (("dataset", "Datasets", "/datasets"), ("model", "Models", "/models"), ("adapter", "Adapters", "/models"),
            ("fach-llm", "Fach-LLMs", "/models"), ("evaluation", "Evaluations", "/evaluations"),
            ("release", "Releases", "/releases"))
SHOWN = 8


@router.get("/p/{project}", response_class=HTMLResponse)
def dashboard(ctx: ProjectPage) -> HTMLResponse:
    records = ctx.ws.catalog.list_artifacts()
    by_kind: dict[str, list] = {}
    for record in reversed(records):  # newest first
        by_kind.setdefault(record.kind, []).append(record)
    sections = [(kind, title, link, by_kind.get(kind, [])) for kind, title, link in SECTIONS]
    running = [r for r in ctx.ws.catalog.list_runs(limit=200) if r.status in ("running", "queued")]
    return ctx.render("dashboard.html", sections=sections, shown=SHOWN, running=running)
