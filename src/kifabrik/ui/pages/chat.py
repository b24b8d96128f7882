"""The chat playground: talk to a model, adapter or Fach-LLM of the project, answer streamed token by token.

It goes through the serving path of `kifabrik serve` (`kifabrik.serve`): one `ServerState` per
project, kept in the app, decides (usage policy, purpose `serving`), renders the prompt with the
AI notice, grounds a Fach-LLM in its knowledge base, queues on the same batching engine and
writes the same one `serve.request` audit entry per answer — with the signed-in user as actor.
Models load on first use, as in `kifabrik serve`; a new model or adapter in the project is picked
up at the next message.

`POST /chat/stream` answers with the OpenAI chunks of `/v1/chat/completions` (server-sent events),
which work.js appends as they come; without JavaScript the form posts to `POST /chat` and the
page shows the whole answer.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from kifabrik.serve.errors import APIError
from kifabrik.serve.keys import KeyRecord
from kifabrik.serve.metrics import Metrics
from kifabrik.serve.models import ModelTable, discover
from kifabrik.serve.routes import open_job, stream
from kifabrik.serve.schemas import ChatRequest
from kifabrik.serve.state import AI_DISCLOSURE, ServeConfig, ServerState
from kifabrik.ui import i18n
from kifabrik.ui.web import Page, ProjectPage
from kifabrik.workspace import Workspace

router = APIRouter()
_LOCK = threading.Lock()
DEFAULTS = {"temperature": "0.7", "max_tokens": "256", "system": ""}


@dataclass(frozen=True)
class HubUser(KeyRecord):
    """The signed-in user in place of an API key: every model of their project, audited as `user:NAME`."""

    user: str = ""

    @property
    def actor(self) -> str:
        return f"user:{self.user}"


def caller(ctx: Page) -> HubUser:
    from datetime import UTC, datetime

    return HubUser(id="ki-hub", name=None, models=["*"], rate_limit=None, created_at=datetime.now(UTC),
                   revoked_at=None, user=ctx.user.name)


def _signature(served: dict[str, Any]) -> tuple[tuple[str, str, str], ...]:
    return tuple(sorted((n, s.record.id, s.fach_llm.id if s.fach_llm else "") for n, s in served.items()))


def server_state(request: Request, ws: Workspace, project: str) -> ServerState:
    """The project's serving state (kept in `app.state`), rebuilt when its models or adapters changed.

    An adapter joins its base model's backend when that loads, so a new adapter means a new table;
    the old one is closed in the background once its answers are written.
    """
    served = discover(ws)
    with _LOCK:
        states: dict[str, ServerState] = getattr(request.app.state, "chat_states", None) or {}
        request.app.state.chat_states = states
        state = states.get(project)
        if state is not None and _signature(state.table.served) == _signature(served):
            return state
        config = ServeConfig()  # what `kifabrik serve` runs with by default: AI notice on, no content logged
        metrics = Metrics()
        options = config.engine_options(ws.settings.home)
        table = ModelTable(ws, served, config.backend, options, on_batch=metrics.batch_size.observe)
        states[project] = ServerState(ws, config, table, metrics)
    if state is not None:
        threading.Thread(target=state.table.close, name=f"chat-close-{project}", daemon=True).start()
    return states[project]


def chat_body(form: Any) -> tuple[ChatRequest | None, dict[str, str], dict[str, str]]:
    """The form as a chat request (streamed), the values to show again, and the problems per field."""
    values = {k: str(form.get(k) or "") for k in ("model", "system", "message", "temperature", "max_tokens")}
    errors: dict[str, str] = {}
    if not values["message"].strip():
        errors["message"] = "Write a message."
    if not values["model"]:
        errors["model"] = "Choose a model."
    numbers: dict[str, Any] = {}
    for field, kind in (("temperature", float), ("max_tokens", int)):
        text = values[field].strip().replace(",", ".")
        if text:
            try:
                numbers[field] = kind(text)
            except ValueError:
                errors[field] = "Enter a number." if kind is float else "Enter a whole number."
    if errors:
        return None, values, errors
    messages = ([{"role": "system", "content": values["system"]}] if values["system"].strip() else [])
    messages.append({"role": "user", "content": values["message"]})
    try:
        body = ChatRequest.model_validate({"model": values["model"], "messages": messages, "stream": True, **numbers})
    except ValidationError as exc:
        for err in exc.errors():
            field = str(err["loc"][0]) if err["loc"] else "message"
            errors[field if field in values else "message"] = str(err["msg"]).removeprefix("Value error, ")
        return None, values, errors
    return body, values, {}


def _page(ctx: Page, state: ServerState, *, status: int = 200, values: dict[str, str] | None = None,
          errors: dict[str, str] | None = None, answer: dict[str, Any] | None = None) -> HTMLResponse:
    models = [(name, s.fach_llm.kind if s.fach_llm else s.record.kind, s.fach_llm.ref if s.fach_llm else s.record.ref)
              for name, s in state.table.served.items()]
    return ctx.render("work_chat.html", status=status, title="Chat", models=models, values={**DEFAULTS, **(values or {})},
                      errors=errors or {}, answer=answer, disclosure=AI_DISCLOSURE)


@router.get("/p/{project}/chat", response_class=HTMLResponse)
async def chat(ctx: ProjectPage, request: Request) -> HTMLResponse:
    state = await run_in_threadpool(server_state, request, ctx.ws, ctx.project or "")
    return _page(ctx, state)


def _endpoint(ctx: Page) -> str:
    # the serving code formats chunks by the endpoint's name; the audit entry names the page the answer came from
    return ctx.url("/chat/completions")


@router.post("/p/{project}/chat/stream")
async def chat_stream(ctx: ProjectPage, request: Request) -> Response:
    """The answer as server-sent events in the format of `/v1/chat/completions` with `stream: true`."""
    form = await ctx.form("work")  # chat is work (accounts: engineer and up): it runs a model
    body, _, errors = chat_body(form)
    if body is None:
        return JSONResponse({"error": {"message": " ".join(ctx.t(e) for e in errors.values()), "fields": errors}},
                            status_code=400)
    state = await run_in_threadpool(server_state, request, ctx.ws, ctx.project or "")
    try:
        job, queue = await open_job(state, caller(ctx), body, "chat", _endpoint(ctx))
    except APIError as exc:
        return JSONResponse(exc.body(), status_code=exc.status)
    return StreamingResponse(stream(state, job, queue), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


@router.post("/p/{project}/chat", response_class=HTMLResponse)
async def chat_whole(ctx: ProjectPage, request: Request) -> HTMLResponse:
    """Without JavaScript: the same streamed answer, collected, on the page."""
    form = await ctx.form("work")  # chat is work (accounts: engineer and up): it runs a model
    body, values, errors = chat_body(form)
    state = await run_in_threadpool(server_state, request, ctx.ws, ctx.project or "")
    if body is None:
        return _page(ctx, state, status=400, values=values, errors=errors)
    try:
        job, queue = await open_job(state, caller(ctx), body, "chat", _endpoint(ctx))
    except APIError as exc:
        return _page(ctx, state, status=exc.status, values=values, errors={"answer": exc.message})
    text: list[str] = []
    sources: list[dict[str, Any]] | None = None
    error = None
    async for event in stream(state, job, queue):
        data = event.removeprefix("data: ").strip()
        if data == "[DONE]":
            continue
        chunk = json.loads(data)
        if "error" in chunk:
            error = chunk["error"]["message"]
        for choice in chunk.get("choices", []):
            text.append((choice.get("delta") or {}).get("content") or "")
        sources = chunk.get("sources", sources)
    answer = {"question": values["message"], "text": "".join(text), "sources": sources, "error": error}
    return _page(ctx, state, values=values, answer=answer)


i18n.add({
    AI_DISCLOSURE: "Dieser Inhalt wurde von einem KI-System erzeugt (EU AI Act, Art. 50).",
    "Model, adapter or Fach-LLM to talk to": "Modell, Adapter oder Fach-LLM für das Gespräch",
    "System prompt (optional)": "Systemanweisung (optional)",
    "Your message": "Ihre Nachricht",
    "Temperature (0 = always the most likely word)": "Temperatur (0 = immer das wahrscheinlichste Wort)",
    "Most tokens in the answer": "Höchstzahl Tokens in der Antwort",
    "Send": "Senden",
    "Answer": "Antwort",
    "Sources": "Quellen",
    "Loading the model… the first answer of a model takes longer.":
        "Das Modell wird geladen … die erste Antwort eines Modells dauert länger.",
    "Answering…": "Antwortet …",
    "Models load on first use: the first answer of a model takes longer.":
        "Modelle werden bei der ersten Nutzung geladen: Die erste Antwort eines Modells dauert länger.",
    "No model, adapter or Fach-LLM in this project yet.": "Noch kein Modell, Adapter oder Fach-LLM in diesem Projekt.",
    "Write a message.": "Bitte eine Nachricht schreiben.",
    "Choose a model.": "Bitte ein Modell wählen.",
    "Usage policies and the audit log apply as for the API (kifabrik serve).":
        "Nutzungsrichtlinien und Audit-Protokoll gelten wie für die API (kifabrik serve).",
    "Settings": "Einstellungen",
    "Your role does not include trying models; ask for the engineer role.":
        "Ihre Rolle umfasst das Ausprobieren von Modellen nicht; bitten Sie um die Rolle Entwicklung.",
    "Conversation": "Gespräch",
    "You": "Sie",
    "adapter": "Adapter",
    "model": "Modell",
    "fach-llm": "Fach-LLM",
})
