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
    sections = []
    for kind, title, link in SECTIONS:  # one short query per section: fast with thousands of artifacts
        newest, total = ctx.ws.catalog.page_artifacts((kind,), limit=SHOWN)
        sections.append((kind, title, link, newest, total))
    running = [r for r in ctx.ws.catalog.list_runs(limit=200) if r.status in ("running", "queued")]
    return ctx.render("dashboard.html", sections=sections, shown=SHOWN, running=running)
