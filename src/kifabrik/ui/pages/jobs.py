"""Training and other background jobs: start a training or a recipe, follow a job live, cancel or resume it.

A job is a separate process (`kifabrik.ui.jobs`): closing the browser, or restarting the UI server,
does not stop it. The job page works without JavaScript (it shows the state when it was loaded,
with the loss curve drawn on the server); work.js follows `/events` and redraws it live.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, Response, StreamingResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from kifabrik.catalog import ArtifactRecord
from kifabrik.errors import KifabrikError, NotFoundError
from kifabrik.ui import i18n, jobs
from kifabrik.ui.web import Page, ProjectPage, redirect
from kifabrik.workspace import Workspace

router = APIRouter()
#: what a person can run, chat with or release: the kinds the serving path and `kifabrik eval` accept
RUNNABLE = ("model", "adapter", "fach-llm")
MAX_RECIPE_BYTES = 256 * 1024
_ADAPTER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
#: the loss chart's drawing area (SVG user units); work.js draws with the same numbers
CHART = {"width": 640, "height": 220, "left": 56, "right": 12, "top": 12, "bottom": 32}
#: the training form's fields with their defaults: small enough for a first try on a CPU
TRAIN_DEFAULTS = {"max_steps": "60", "learning_rate": "0.0002", "rank": "16", "batch_size": "4", "max_seq_length": "512"}


#: what the pages call each kind of job (English source strings, translated like every other)
KIND_LABELS = {"train": "Training", "recipe": "Recipe", "eval": "Evaluation"}


def kind_label(kind: str) -> str:
    return KIND_LABELS.get(kind, kind)


def runnable(ws: Workspace) -> list[ArtifactRecord]:
    """The project's models, adapters and Fach-LLMs (usable ones), newest first."""
    found = [r for kind in RUNNABLE for r in ws.catalog.list_artifacts(kind) if r.status == "ok"]
    return sorted(found, key=lambda r: r.created_at, reverse=True)


def when(text: str | None) -> str:
    """An ISO time as `2026-12-01 21:34` (UTC), or empty."""
    if not text:
        return ""
    return datetime.fromisoformat(text).strftime("%Y-%m-%d %H:%M")


def duration(job: jobs.Job) -> str:
    """How long a job ran (or runs until now), as `1 h 02 min`, `3 min 05 s` or `12 s`."""
    if not job.started_at:
        return ""
    start = datetime.fromisoformat(job.started_at)
    end = datetime.fromisoformat(job.ended_at) if job.ended_at else datetime.now(start.tzinfo)
    s = max(0, int((end - start).total_seconds()))
    if s >= 3600:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    return f"{s // 60} min {s % 60:02d} s" if s >= 60 else f"{s} s"


def loss_chart(points: list[list[float]]) -> dict[str, Any]:
    """The loss curve as SVG geometry: the polyline's points and the axis labels (None without points)."""
    c = CHART
    if not points:
        return {**c, "points": "", "labels": None}
    steps = [p[0] for p in points]
    losses = [p[1] for p in points]
    x0, x1 = min(steps), max(steps)
    y0, y1 = min(losses), max(losses)
    x1, y1 = (x1 if x1 > x0 else x0 + 1), (y1 if y1 > y0 else y0 + 1e-9)
    w = c["width"] - c["left"] - c["right"]
    h = c["height"] - c["top"] - c["bottom"]
    xy = [(c["left"] + (s - x0) / (x1 - x0) * w, c["top"] + (1 - (v - y0) / (y1 - y0)) * h) for s, v in points]
    return {**c, "points": " ".join(f"{x:.1f},{y:.1f}" for x, y in xy),
            "labels": {"x0": int(x0), "x1": int(max(steps)), "y0": f"{min(losses):.3f}", "y1": f"{max(losses):.3f}"}}


def _records(ws: Workspace, ids: list[str]) -> list[ArtifactRecord]:
    out = []
    for artifact_id in ids:
        try:
            out.append(ws.catalog.get_artifact(artifact_id))
        except NotFoundError:
            continue  # removed since (doctor --fix): the job still ran
    return out


def _jobs_page(ctx: Page, *, status: int = 200, errors: dict[str, str] | None = None,
               values: dict[str, Any] | None = None) -> HTMLResponse:
    listed = jobs.list_jobs(ctx.ws, ctx.project)
    return ctx.render("work_jobs.html", status=status, title="Training", jobs=listed, duration=duration, when=when, kind_label=kind_label,
                      models=ctx.ws.catalog.list_artifacts("model"), datasets=ctx.ws.catalog.list_artifacts("dataset"),
                      errors=errors or {}, values={**TRAIN_DEFAULTS, **(values or {})})


@router.get("/p/{project}/jobs", response_class=HTMLResponse)
def jobs_list(ctx: ProjectPage) -> HTMLResponse:
    return _jobs_page(ctx)


def train_argv(ws: Workspace, form: dict[str, Any]) -> tuple[list[str], str, dict[str, str]]:
    """`kifabrik train ...` arguments from the training form, its title, and the problems per field.

    The sizes are checked with `TrainOptions`, the model the CLI validates, so a wrong value is
    named on the form instead of failing in the background.
    """
    from kifabrik.train.options import TrainOptions

    errors: dict[str, str] = {}
    base, data = str(form.get("base") or ""), [str(d) for d in form.get("data") or []]
    name = str(form.get("name") or "").strip()
    base_rec = None
    try:
        base_rec = ws.catalog.get_artifact(base, "model") if base else None
    except NotFoundError:
        pass
    if base_rec is None:
        errors["base"] = "Choose the base model."
    if not data:
        errors["data"] = "Choose at least one dataset."
    for ref in data:
        try:
            ws.catalog.get_artifact(ref, "dataset")
        except NotFoundError:
            errors["data"] = f"There is no dataset {ref} in this project."
    if name and not _ADAPTER_NAME.match(name):
        errors["name"] = "Letters, digits, dot, underscore and hyphen only; start with a letter or digit."
    sizes = {"max_steps": "max_steps", "learning_rate": "learning_rate", "rank": "lora.rank",
             "batch_size": "batch_size", "max_seq_length": "max_seq_length"}
    raw: dict[str, Any] = {}
    for field, key in sizes.items():
        text = str(form.get(field) or "").strip().replace(",", ".")  # German decimal comma
        if not text:
            continue
        try:
            value: Any = float(text) if field == "learning_rate" else int(text)
        except ValueError:
            errors[field] = "Enter a number." if field == "learning_rate" else "Enter a whole number."
            continue
        if key == "lora.rank":
            raw["lora"] = {"rank": value, "alpha": 2 * value}  # alpha = 2 x rank, the usual scale of the update
        else:
            raw[key] = value
    if not errors:
        try:
            TrainOptions.model_validate(raw)
        except ValidationError as exc:
            for err in exc.errors():
                loc = [str(p) for p in err["loc"]]
                field = "rank" if loc[:1] == ["lora"] else loc[0]
                errors[field] = str(err["msg"]).removeprefix("Value error, ")
    if errors:
        return [], "", errors
    assert base_rec is not None
    argv = ["train", "--base", base_rec.id]
    for ref in data:
        argv += ["--data", ref]
    if name:
        argv += ["--name", name]
    flags = {"max_steps": "--max-steps", "learning_rate": "--lr", "batch_size": "--batch-size",
             "max_seq_length": "--max-seq-length"}
    argv += [a for key, flag in flags.items() if key in raw for a in (flag, str(raw[key]))]
    if "lora" in raw:
        argv += ["--rank", str(raw["lora"]["rank"]), "--alpha", str(raw["lora"]["alpha"])]
    title = name or f"{base_rec.name} + {', '.join(ws.catalog.get_artifact(d).name for d in data)}"
    return argv, title, {}


@router.post("/p/{project}/jobs/train")
async def start_training(ctx: ProjectPage) -> Response:
    form = await ctx.form("work")
    values = {k: form.get(k) for k in ("base", "name", *TRAIN_DEFAULTS)}
    values["data"] = form.getlist("data")
    argv, title, errors = await run_in_threadpool(train_argv, ctx.ws, values)
    if errors:
        return _jobs_page(ctx, status=400, errors=errors, values=values)
    job = jobs.start_job(ctx.ws, project=ctx.project or "", user=ctx.user.name, kind="train", title=title, argv=argv)
    return redirect(ctx.url(f"/jobs/{job.id}"))


def recipes_dir(ws: Workspace, project: str) -> Path:
    return ws.settings.home / "ui" / "recipes" / project


def check_recipe(ws: Workspace, path: Path) -> None:
    """The check `kifabrik run RECIPE --check` makes (schema, references against this project's catalog)."""
    from kifabrik.pipeline import load_recipe

    load_recipe(path, [], ws)


@router.post("/p/{project}/jobs/recipe")
async def start_recipe(ctx: ProjectPage) -> Response:
    form = await ctx.form("work")
    upload = form.get("recipe")
    if not isinstance(upload, UploadFile) or not upload.filename:
        return _jobs_page(ctx, status=400, errors={"recipe": "Choose a recipe file (YAML)."})
    data = await upload.read(MAX_RECIPE_BYTES + 1)
    if len(data) > MAX_RECIPE_BYTES:
        return _jobs_page(ctx, status=400, errors={"recipe": f"The file is larger than {MAX_RECIPE_BYTES // 1024} KiB."})
    original = Path(upload.filename).name
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(original).stem)[:60] or "recipe"
    folder = recipes_dir(ctx.ws, ctx.project or "")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{secrets.token_hex(4)}-{stem}.yaml"
    path.write_bytes(data)
    try:
        await run_in_threadpool(check_recipe, ctx.ws, path)
    except KifabrikError as exc:
        path.unlink(missing_ok=True)  # an invalid recipe is not kept
        message = exc.message.replace(str(path), original)  # file:line of the file as the person named it
        hint = exc.hint or ""
        return _jobs_page(ctx, status=400, errors={"recipe": message, "recipe_hint": hint.replace(str(path), original)})
    job = jobs.start_job(ctx.ws, project=ctx.project or "", user=ctx.user.name, kind="recipe", title=original,
                         argv=["run", str(path)])
    return redirect(ctx.url(f"/jobs/{job.id}"))


@router.get("/p/{project}/jobs/{job_id}", response_class=HTMLResponse)
def job_page(ctx: ProjectPage, job_id: str) -> HTMLResponse:
    job = jobs.get_job(ctx.ws, ctx.project or "", job_id)
    state = jobs.progress(ctx.ws, job)
    return ctx.render("work_job.html", title=job.title, job=job, state=state, chart=loss_chart(state["loss"]),
                      outputs=_records(ctx.ws, state["outputs"]), duration=duration, when=when, kind_label=kind_label,
                      resumable=job.kind == "train" and job.status in jobs.RESUMABLE)


@router.get("/p/{project}/jobs/{job_id}/events")
async def job_events(ctx: ProjectPage, job_id: str) -> Response:
    """Server-sent events: `progress` with jobs.progress() each time it changes, then `end` once the job ended."""
    await run_in_threadpool(jobs.get_job, ctx.ws, ctx.project or "", job_id)  # 404 before the stream starts

    async def stream() -> AsyncIterator[str]:
        last: dict[str, Any] = {}
        async for state in jobs.events(ctx.ws, ctx.project or "", job_id):
            last = state
            yield f"event: progress\ndata: {json.dumps(state, ensure_ascii=False)}\n\n"
        yield f"event: end\ndata: {json.dumps(last, ensure_ascii=False)}\n\n"

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


@router.post("/p/{project}/jobs/{job_id}/cancel")
async def cancel(ctx: ProjectPage, job_id: str) -> Response:
    await ctx.form("work")
    jobs.cancel_job(ctx.ws, ctx.project or "", job_id)
    return redirect(ctx.url(f"/jobs/{job_id}"))


@router.post("/p/{project}/jobs/{job_id}/resume")
async def resume(ctx: ProjectPage, job_id: str) -> Response:
    await ctx.form("work")
    job = await run_in_threadpool(jobs.resume_job, ctx.ws, ctx.project or "", job_id, ctx.user.name)
    return redirect(ctx.url(f"/jobs/{job.id}"))


i18n.add({
    "Jobs": "Aufträge",
    "Title": "Titel",
    "User": "Benutzer",
    "Started": "Gestartet",
    "Duration": "Dauer",
    "No jobs yet.": "Noch keine Aufträge.",
    "Start a training": "Training starten",
    "Base model": "Basismodell",
    "Adapter name (optional)": "Name des Adapters (optional)",
    "Steps": "Schritte",
    "Learning rate": "Lernrate",
    "LoRA rank": "LoRA-Rang",
    "Batch size": "Batchgröße",
    "Max. sequence length (tokens)": "Max. Sequenzlänge (Tokens)",
    "Start training": "Training starten",
    "Start a recipe": "Rezept starten",
    "Recipe file (YAML)": "Rezeptdatei (YAML)",
    "The recipe is checked first, as with kifabrik run RECIPE --check.":
        "Das Rezept wird zuerst geprüft, wie mit kifabrik run REZEPT --check.",
    "Check and start": "Prüfen und starten",
    "Choose the base model.": "Bitte das Basismodell wählen.",
    "Choose at least one dataset.": "Bitte mindestens einen Datensatz wählen.",
    "Letters, digits, dot, underscore and hyphen only; start with a letter or digit.":
        "Nur Buchstaben, Ziffern, Punkt, Unterstrich und Bindestrich; am Anfang ein Buchstabe oder eine Ziffer.",
    "Enter a number.": "Bitte eine Zahl eingeben.",
    "Enter a whole number.": "Bitte eine ganze Zahl eingeben.",
    "Choose a recipe file (YAML).": "Bitte eine Rezeptdatei (YAML) wählen.",
    "No models in this project yet.": "Noch keine Modelle in diesem Projekt.",
    "No datasets in this project yet.": "Noch keine Datensätze in diesem Projekt.",
    "Your role can look at jobs but not start them.": "Ihre Rolle kann Aufträge ansehen, aber nicht starten.",
    "Job": "Auftrag",
    "Progress": "Fortschritt",
    "Step {step} of {max}": "Schritt {step} von {max}",
    "Step {step}": "Schritt {step}",
    "Training loss": "Trainingsverlust",
    "No loss recorded yet.": "Noch kein Verlust aufgezeichnet.",
    "step": "Schritt",
    "loss": "Verlust",
    "Log (last lines)": "Protokoll (letzte Zeilen)",
    "Results": "Ergebnisse",
    "Results appear here when the job has succeeded.": "Ergebnisse erscheinen hier, wenn der Auftrag erfolgreich war.",
    "Stop": "Anhalten",
    "Stop this job? A training saves a checkpoint and can be resumed.":
        "Diesen Auftrag anhalten? Ein Training speichert einen Zwischenstand und kann fortgesetzt werden.",
    "Resume": "Fortsetzen",
    "Closing this page does not stop the job.": "Das Schließen dieser Seite hält den Auftrag nicht an.",
    "Resumed from job {id}": "Fortgesetzt von Auftrag {id}",
    "Command": "Befehl",
    "Exit code": "Exit-Code",
    "All jobs": "Alle Aufträge",
    "queued": "wartet",
    "running": "läuft",
    "succeeded": "erfolgreich",
    "failed": "fehlgeschlagen",
    "cancelled": "abgebrochen",
    "interrupted": "unterbrochen",
    "Recipe": "Rezept",
    "Evaluation": "Evaluierung",
    "Live updates are on.": "Live-Aktualisierung ist an.",
    "Reload the page to see the newest state.": "Laden Sie die Seite neu, um den neuesten Stand zu sehen.",
})
