"""POST /v1/chat/completions and /v1/completions: check, render, queue, answer (JSON or SSE)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from kifabrik.kb.grounding import with_citations
from kifabrik.models import toolcalls
from kifabrik.serve.backends.base import Backend
from kifabrik.serve.engine import Event, GenRequest, async_sink
from kifabrik.serve.errors import APIError, internal_error
from kifabrik.serve.keys import KeyRecord
from kifabrik.serve.models import Served
from kifabrik.serve.openapi import CHAT_RESPONSES, COMPLETION_RESPONSES
from kifabrik.serve.schemas import ChatRequest, CompletionRequest
from kifabrik.serve.state import AI_NOTICE, ServerState, Trace, actor

router = APIRouter()


def state_of(request: Request) -> ServerState:
    state: ServerState = request.app.state.kf
    return state


def endpoint_of(request: Request) -> str:
    """The route's path (`/v1/models/{name}`) as a metrics label, never the path sent (unbounded labels)."""
    return str(getattr(request.scope.get("route"), "path", "other"))


def current_key(request: Request) -> KeyRecord | None:
    """FastAPI runs this sync dependency in a thread: the key lookup reads the catalog."""
    state = state_of(request)
    try:
        return state.authenticate(request.headers.get("authorization"))
    except APIError as exc:  # 401/429: counted, not audited (no key, no decision, no model used)
        state.refused(None, endpoint_of(request), exc)
        raise


CurrentKey = Annotated[KeyRecord | None, Depends(current_key)]


@dataclass
class Job:
    """One accepted request on its way through the backend."""

    endpoint: str
    served: Served
    key: KeyRecord | None
    body: ChatRequest | CompletionRequest
    trace: Trace
    req: GenRequest
    prefill: str = ""
    tools: bool = False
    sources: list[dict[str, Any]] | None = None  # a Fach-LLM's passages (None for a plain model)
    canned: str | None = None  # an answer given without the model (nothing relevant in the knowledge base)
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:24])
    created: int = field(default_factory=lambda: int(time.time()))
    start: float = field(default_factory=time.perf_counter)


@router.post("/v1/chat/completions", response_model=None, responses=CHAT_RESPONSES)
async def chat_completions(body: ChatRequest, request: Request, key: CurrentKey) -> Any:
    """Chat completion (OpenAI format), with tools and SSE streaming."""
    return await _handle(request, key, body, "chat")


@router.post("/v1/completions", response_model=None, responses=COMPLETION_RESPONSES)
async def completions(body: CompletionRequest, request: Request, key: CurrentKey) -> Any:
    """Text completion of a raw prompt (no chat template)."""
    return await _handle(request, key, body, "completion")


async def _handle(request: Request, key: KeyRecord | None, body: Any, kind: str) -> Any:
    state = state_of(request)
    job, queue = await open_job(state, key, body, kind, request.url.path)
    if body.stream:
        return StreamingResponse(stream(state, job, queue), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache"})
    return await _collect(state, request, job, queue)


async def open_job(state: ServerState, key: KeyRecord | None, body: Any, kind: str, endpoint: str) -> tuple[Job, Any]:
    """Decide, prepare and queue one request (`kind` chat or completion) as the API does: the access and
    usage-policy decision is audited under `key.actor`, the model loads on first use; returns the job and
    the queue its events arrive on (`stream` turns them into server-sent events). The web UI's chat calls
    this too, so it serves exactly as `/v1/chat/completions` does."""
    trace = Trace(endpoint, body.model, key)
    try:
        # one worker-thread hop for the blocking part (decision, backend, prompt): each hop costs the
        # event loop a round trip through the thread pool
        backend, job = await run_in_threadpool(_decide_and_prepare, state, body, kind, trace)
        queue = async_sink(job.req)
        if job.canned is not None:
            job.req.emit(Event(text=job.canned, finish_reason="stop", prompt_tokens=len(job.req.prompt_ids)))
        else:
            backend.submit(job.req)
    except _Refused as refused:  # 404 / 403 / a failed policy check: a decision about a model, audited
        exc = refused.error
        state.refused(trace, trace.endpoint, exc)
        await run_in_threadpool(state.record, trace, exc.status, error=exc.code, message=exc.message[:500])
        raise exc from None
    except APIError as exc:  # context length, full queue, shutting down: counted, nothing was served
        state.refused(trace, trace.endpoint, exc)
        raise
    except Exception as exc:  # noqa: BLE001 - a bug after the access decision: audited with its error id
        err = internal_error(exc)
        state.refused(trace, trace.endpoint, err)
        await run_in_threadpool(state.record, trace, 500, error=err.code, message=err.message)
        raise err from None
    state.metrics.in_flight.inc()
    return job, queue


class _Refused(Exception):
    """The access or policy decision refused the request (raised in the worker thread, audited by `open_job`)."""

    def __init__(self, error: APIError) -> None:
        super().__init__(error.message)
        self.error = error


def _decide_and_prepare(state: ServerState, body: Any, kind: str, trace: Trace) -> tuple[Backend, Job]:
    """Decide on the request (`_Refused` when refused), then load the backend and prepare the job."""
    try:
        served = state.authorize(trace)
    except APIError as exc:
        raise _Refused(exc) from None
    backend = state.table.backend(served)
    return backend, _prepare(state, backend, served, body, kind, trace)


def _prepare(state: ServerState, backend: Backend, served: Served, body: Any, kind: str, trace: Trace) -> Job:
    prefill, tools_on = "", False
    if kind == "chat":
        messages = [_message(m.model_dump(exclude_none=True)) for m in body.messages]
        if state.config.ai_notice:
            if messages[0]["role"] == "system":
                messages[0]["content"] = f"{messages[0].get('content') or ''}\n\n{AI_NOTICE}".strip()
            else:
                messages.insert(0, {"role": "system", "content": AI_NOTICE})
        grounding = state.table.grounding(served, actor(trace.key))
        sources: list[dict[str, Any]] | None = None
        canned: str | None = None
        if grounding is not None:
            room = backend.context_length - (body.max_tokens or 16)
            grounded = grounding.ground(messages, fits=lambda m: len(backend.chat_ids(m, None, "")) <= room,
                                        record=lambda decision: setattr(trace, "knowledge", decision))
            messages, sources = grounded.messages, [src.as_dict() for src in grounded.sources]
            canned = None if grounded.found else grounded.not_found
        tools_on = bool(body.tools) and body.tool_choice != "none"
        tools = [t.model_dump(exclude_none=True) for t in body.tools] if tools_on else None
        native = toolcalls.template_handles_tools(backend.chat_template)
        choice = body.tool_choice.model_dump() if hasattr(body.tool_choice, "model_dump") else body.tool_choice
        prefill = toolcalls.prefill(choice) if tools_on else ""
        grammar = _grammar(backend, body, tools, choice, native)
        try:
            ids = backend.chat_ids(toolcalls.prompt_messages(messages, tools, native), tools if native else None, prefill)
        except Exception as exc:  # jinja templates raise for conversations they do not accept
            from jinja2 import TemplateError

            # raise_exception("...") in a template is its author's message to the caller; other text stays here
            why = f": {exc}" if isinstance(exc, TemplateError) else ""
            raise APIError(400, f"the chat template of `{body.model}` rejects these messages{why}",
                           code="invalid_messages", param="messages") from None
    else:
        grammar = None
        if served.fach_llm is not None:
            raise APIError(400, f"`{body.model}` is a Fach-LLM that answers from its knowledge base; "
                                "use /v1/chat/completions", code="unsupported_endpoint", param="model")
        sources, canned = None, None
        ids = backend.text_ids(body.prompt)
    if not ids:  # an empty sequence cannot be decoded (and would fail the whole batch it joins)
        raise APIError(400, "the prompt gives no tokens; send some text", code="invalid_request",
                       param="messages" if kind == "chat" else "prompt")
    limit = backend.context_length
    if body.max_tokens is not None:
        if len(ids) + body.max_tokens > limit:
            raise APIError(400, f"This model's maximum context length is {limit} tokens. However, you requested "
                                f"{len(ids) + body.max_tokens} tokens ({len(ids)} in the messages, {body.max_tokens} "
                                "in the completion). Please reduce the length of the messages or completion.",
                           code="context_length_exceeded", param="messages" if kind == "chat" else "prompt")
        max_tokens = body.max_tokens
    else:
        if len(ids) >= limit:
            raise APIError(400, f"This model's maximum context length is {limit} tokens. However, your "
                                f"{'messages' if kind == 'chat' else 'prompt'} resulted in {len(ids)} tokens. "
                                "Please reduce the length of the messages.",
                           code="context_length_exceeded", param="messages" if kind == "chat" else "prompt")
        max_tokens = min(state.config.default_max_tokens, limit - len(ids))
    req = GenRequest(prompt_ids=ids, max_tokens=max_tokens, adapter=served.adapter, temperature=body.temperature,
                     top_p=body.top_p, seed=body.seed, stop=body.stop_list(), grammar=grammar,
                     stream=bool(body.stream))
    return Job(trace.endpoint, served, trace.key, body, trace, req, prefill=prefill, tools=tools_on, sources=sources,
               canned=canned)


def _grammar(backend: Backend, body: ChatRequest, tools: list[dict[str, Any]] | None, choice: Any,
             native: bool) -> Any:
    """The compiled constraint of a chat request (`response_format`, or the call format of its tools), or None.

    A schema the grammar cannot enforce is a 400 naming the parameter. A backend that cannot constrain
    refuses `response_format`; its tool calls are parsed from free text as before.
    """
    from kifabrik.models.structured import Constraint, UnsupportedSchema

    fmt = body.response_format
    constraint: Constraint | None = None
    param = "response_format"
    try:
        if fmt is not None and fmt.type != "text":
            if tools:
                raise APIError(400, "response_format json_object / json_schema together with tools is not supported; "
                                    "send tool_choice 'none' or leave response_format out", code="invalid_request",
                               param="response_format")
            if fmt.type == "json_object":
                constraint = Constraint.json_object()
            else:
                param = "response_format.json_schema.schema"
                constraint = Constraint.json_schema(fmt.json_schema.schema_, param)
            if not backend.constrains:
                raise APIError(400, f"the {backend.kind} backend cannot decode under a response_format",
                               code="unsupported_parameter", param="response_format")
        elif tools:
            param = "tools"
            tag = toolcalls.call_format(tools, choice, native=native, chat_template=backend.chat_template)
            constraint = Constraint.tags(tag) if tag is not None and backend.constrains else None
        return backend.grammar(constraint) if constraint is not None else None
    except UnsupportedSchema as exc:
        where = exc.param if exc.param != "schema" else param
        raise APIError(400, exc.message, code="unsupported_schema", param=where) from None


def _message(m: dict[str, Any]) -> dict[str, Any]:
    if isinstance(m.get("content"), list):
        m["content"] = "".join(p["text"] for p in m["content"])
    if m["role"] == "developer":  # OpenAI's newer name for the system role
        m["role"] = "system"
    m.pop("refusal", None)
    return m


# ------------------------------------------------------------------ answers
def _chunk(job: Job, delta: dict[str, Any] | None, finish: str | None, text: str | None = None) -> dict[str, Any]:
    if job.endpoint.endswith("chat/completions"):
        choice = {"index": 0, "delta": delta or {}, "logprobs": None, "finish_reason": finish}
        obj = "chat.completion.chunk"
    else:
        choice = {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish}
        obj = "text_completion"
    return {"id": _rid(job), "object": obj, "created": job.created, "model": job.served.name,
            "system_fingerprint": None, "choices": [choice], "ai_generated": True}


def _rid(job: Job) -> str:
    return ("chatcmpl-" if job.endpoint.endswith("chat/completions") else "cmpl-") + job.id


def _usage(last: Event) -> dict[str, int]:
    return {"prompt_tokens": last.prompt_tokens, "completion_tokens": last.completion_tokens,
            "total_tokens": last.prompt_tokens + last.completion_tokens}


async def _collect(state: ServerState, request: Request, job: Job, queue: Any) -> JSONResponse:
    parts: list[str] = [job.prefill]
    last = Event()
    try:
        while True:
            with anyio.move_on_after(0.5) as scope:
                ev = await queue.get()
            if scope.cancelled_caught:
                if await request.is_disconnected():
                    job.req.cancelled.set()
                continue
            parts.append(ev.text)
            if ev.finish_reason:
                last = ev
                break
    finally:
        state.metrics.in_flight.dec()
    text = "".join(parts)
    if last.finish_reason == "error":
        await _finish(state, job, last, text, 500)
        raise _generation_failed(last)
    finish = last.finish_reason
    if job.endpoint.endswith("chat/completions"):
        content, calls = toolcalls.parse(text) if job.tools else (text, [])
        message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None}
        if calls:
            message["tool_calls"] = [c.openai() for c in calls]
            finish = "tool_calls"
        choice: dict[str, Any] = {"index": 0, "message": message, "logprobs": None, "finish_reason": finish}
        obj = "chat.completion"
    else:
        body: Any = job.body
        choice = {"index": 0, "text": (body.prompt if body.echo else "") + text, "logprobs": None,
                  "finish_reason": finish}
        obj = "text_completion"
    await _finish(state, job, last, text, 200)
    return JSONResponse({"id": _rid(job), "object": obj, "created": job.created, "model": job.served.name,
                         "system_fingerprint": None, "choices": [choice], "usage": _usage(last), "ai_generated": True,
                         **({"sources": with_citations(job.sources, text)} if job.sources is not None else {})})


async def stream(state: ServerState, job: Job, queue: Any) -> AsyncIterator[str]:
    chat = job.endpoint.endswith("chat/completions")
    filt = toolcalls.StreamFilter(job.tools)
    last, text, status, first = Event(), [job.prefill], 200, True

    def sse(data: dict[str, Any]) -> str:
        return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"

    try:
        if chat:
            yield sse(_chunk(job, {"role": "assistant", "content": ""}, None))
        body: Any = job.body
        pre = filt.feed(job.prefill) if chat else (body.prompt if body.echo else "")
        if pre:
            yield sse(_chunk(job, {"content": pre}, None, pre))
        while True:
            ev = await queue.get()
            text.append(ev.text)
            out = filt.feed(ev.text) if chat else ev.text
            if out:
                if first:
                    state.metrics.first_token.labels(job.served.name).observe(time.perf_counter() - job.start)
                    first = False
                yield sse(_chunk(job, {"content": out}, None, out))
            if ev.finish_reason:
                last = ev
                break
        if last.finish_reason == "error":
            status = 500
            yield sse(_generation_failed(last).body())
        else:
            finish = last.finish_reason
            if chat:
                rest, calls = filt.finish()
                if rest:
                    yield sse(_chunk(job, {"content": rest}, None))
                if calls:
                    yield sse(_chunk(job, {"tool_calls": [c.openai(i) for i, c in enumerate(calls)]}, None))
                    finish = "tool_calls"
            cited = with_citations(job.sources, "".join(text)) if job.sources is not None else None
            yield sse({**_chunk(job, {}, finish), **({"sources": cited} if cited is not None else {})})
            opts = getattr(job.body, "stream_options", None)
            if opts is not None and opts.include_usage:
                yield sse({**_chunk(job, None, None), "choices": [], "usage": _usage(last)})
        yield "data: [DONE]\n\n"
    finally:  # also runs when the client went away: stop generating for it
        if not last.finish_reason:
            job.req.cancelled.set()
            status = 499  # nginx's "client closed request"
            state.metrics.cancelled.labels(job.served.name).inc()
        state.metrics.in_flight.dec()
        with anyio.CancelScope(shield=True):
            await _finish(state, job, last, "".join(text), status)


def _generation_failed(last: Event) -> APIError:
    # the backend logged the exception under this id (engine.Scheduler); its text stays in the log
    return APIError(500, f"generation failed; the server log has the details under error id {last.error}",
                    code="generation_error")


async def _finish(state: ServerState, job: Job, last: Event, text: str, status: int) -> None:
    """Metrics and the request's one audit entry, written once when it ends."""
    name = job.served.name
    state.metrics.requests.labels(job.endpoint, name, str(status)).inc()
    state.metrics.latency.labels(job.endpoint, name).observe(time.perf_counter() - job.start)
    state.metrics.prompt_tokens.labels(name).inc(len(job.req.prompt_ids))
    state.metrics.completion_tokens.labels(name).inc(last.completion_tokens)
    outcome: dict[str, Any] = {
        "request_id": _rid(job), "stream": bool(job.body.stream), "prompt_tokens": len(job.req.prompt_ids),
        "completion_tokens": last.completion_tokens, "finish_reason": last.finish_reason or "client_disconnected",
        "latency_ms": round((time.perf_counter() - job.start) * 1000, 1), "user": job.body.user,
        "ai_disclosure": True, "ai_notice": state.config.ai_notice and job.endpoint.endswith("chat/completions")}
    if last.finish_reason == "error":
        outcome["error_id"] = last.error
    if state.config.log_content:
        body: Any = job.body
        outcome["prompt"] = body.prompt if hasattr(body, "prompt") else [m.model_dump(exclude_none=True)
                                                                         for m in body.messages]
        outcome["output"] = text
    await run_in_threadpool(state.record, job.trace, status, **outcome)
