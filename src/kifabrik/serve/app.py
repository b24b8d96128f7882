"""The FastAPI application: routes, OpenAI-style errors, AI disclosure header, health, metrics, docs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import kifabrik
from kifabrik.serve import openapi, schemas
from kifabrik.serve.backends.base import choose_backend
from kifabrik.serve.errors import APIError, model_not_found
from kifabrik.serve.guard import Guard
from kifabrik.serve.metrics import Metrics
from kifabrik.serve.models import ModelTable, discover
from kifabrik.serve.routes import CurrentKey, current_key, endpoint_of, router, state_of
from kifabrik.serve.state import AI_DISCLOSURE, ServeConfig, ServerState
from kifabrik.workspace import Workspace


class DisclosureMiddleware:
    """Art. 50 AI Act: every API response says, machine-readably, that its content is AI-generated."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            return await self.app(scope, receive, send)

        async def send_with_header(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-ai-generated", b"true"),
                                      (b"x-ai-disclosure", AI_DISCLOSURE.encode())]
            await send(message)

        await self.app(scope, receive, send_with_header)


def create_app(ws: Workspace, config: ServeConfig | None = None) -> FastAPI:
    """Build the app for `ws` (models are discovered now, loaded on first use or with `preload`)."""
    config = config or ServeConfig()
    metrics = Metrics()
    options = config.engine_options(ws.settings.home)
    served_models = discover(ws, config.models)
    backend, reason = config.backend, "chosen with --backend"
    if backend == "auto":
        backend, reason = choose_backend(ws, list(served_models.values()), config.gguf_type)
    table = ModelTable(ws, served_models, backend, options, on_batch=metrics.batch_size.observe)
    table.backend_reason = reason
    state = ServerState(ws, config, table, metrics)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings = {k: v for k, v in config.model_dump().items() if k != "ai_notice_off_reason"}
        await run_in_threadpool(state.audit, "serve.start", actor="operator", subject=None, decision=None,
                                details={"settings": settings, "models": sorted(table.served)})
        if not config.ai_notice:
            await run_in_threadpool(state.audit, "serve.ai_notice_off", actor="operator", subject=None,
                                    decision=None, details={"reason": config.ai_notice_off_reason})
        if config.preload:
            for served in table.served.values():
                await run_in_threadpool(table.backend, served)
        yield
        await run_in_threadpool(table.close)  # waits for queued and running generations
        await run_in_threadpool(state.audit, "serve.stop", actor="operator", subject=None, decision=None, details={})

    app = FastAPI(title="kifabrik", version=kifabrik.__version__, lifespan=lifespan,
                  docs_url=None, redoc_url=None,  # Swagger UI and ReDoc load their scripts from a CDN
                  description="OpenAI-compatible API for models and adapters in the kifabrik catalog. "
                              "Every response is marked as AI-generated (header X-AI-Generated, body field "
                              "ai_generated).")
    app.state.kf = state
    # Guard inside the disclosure header (its 413/421/500 answers on /v1/ carry it too), both outside
    # Starlette's exception middleware (the guard catches what no handler took)
    app.add_middleware(Guard, hosts=config.hosts(), max_body=config.max_body_bytes,
                       on_refused=lambda path, err: state.refused(None, _endpoint(app, path), err))
    app.add_middleware(DisclosureMiddleware)
    app.include_router(router)
    _errors(app)

    @app.get("/v1/models", response_model=None, responses={200: {"model": openapi.ModelList}, **openapi.KEYED})
    async def list_models(key: CurrentKey) -> dict[str, Any]:
        """The model names this key may use (models and adapters)."""
        data = [_model(s, table) for n, s in table.served.items() if key is None or key.allows(n)]
        return {"object": "list", "data": data}

    @app.get("/v1/models/{name}", response_model=None, responses={200: {"model": openapi.ModelObject},
                                                                  **openapi.MODEL})
    async def get_model(name: str, key: CurrentKey) -> dict[str, Any]:
        """One model this key may use (404 for unknown names and names outside the key's scope alike)."""
        if name not in table.served or (key is not None and not key.allows(name)):
            raise model_not_found(name)
        return _model(table.served[name], table)

    @app.get("/health", response_model=None, responses={200: {"model": openapi.Health}, **openapi.PUBLIC})
    async def health() -> dict[str, Any]:
        """Liveness, without a key: the process answers (models and queues are in /metrics, behind a key)."""
        return {"status": "ok"}

    metrics_guard = [] if config.metrics_public else [Depends(current_key)]

    @app.get("/metrics", dependencies=metrics_guard, response_class=Response,
             responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}},
                              "description": "Prometheus text format."},
                        **(openapi.PUBLIC if config.metrics_public else openapi.KEYED)})
    async def metrics_endpoint() -> Response:
        """Prometheus metrics: requests, refusals, latency, tokens, queues (a valid key unless --metrics-public)."""
        body, content_type = metrics.render(table.loaded())
        return Response(body, media_type=content_type)

    if config.docs:
        @app.get("/docs", include_in_schema=False)
        async def docs() -> HTMLResponse:
            return HTMLResponse(openapi.docs_page(app.openapi()), headers={"Content-Security-Policy": openapi.DOCS_CSP})

    plain_openapi = app.openapi

    def spec() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = openapi.without_422(plain_openapi())
        return app.openapi_schema

    app.openapi = spec  # type: ignore[method-assign]
    return app


def _endpoint(app: FastAPI, path: str) -> str:
    """`path` as a metrics label: a route's path, else "other" (a label per probed path would grow without end)."""
    return path if any(getattr(r, "path", None) == path for r in app.routes) else "other"


def _model(served: Any, table: ModelTable) -> dict[str, Any]:
    rec = served.record
    return {"id": served.name, "object": "model", "created": int(rec.created_at.timestamp()), "owned_by": "kifabrik",
            "kind": rec.kind, "artifact_id": rec.id, "version": rec.version,
            "root": served.base.name, "parent": served.base.name if rec.kind == "adapter" else None,
            "backend": table.backend_kind, "backend_reason": table.backend_reason}


def _errors(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers())

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        """400 (never 422), naming the fields at fault; counted, not audited (nothing was decided)."""
        err = validation_error(exc.errors())
        state_of(request).refused(None, endpoint_of(request), err)
        return JSONResponse(err.body(), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        err = APIError(exc.status_code, str(exc.detail), code="not_found" if exc.status_code == 404 else None)
        return JSONResponse(err.body(), status_code=exc.status_code, headers=getattr(exc, "headers", None))


def validation_error(errors: Any) -> APIError:
    """One 400 from pydantic's errors: `field.path: message` for each field, the first field as `param`."""
    by_field: dict[str, list[Any]] = {}
    for err in errors:
        loc = [p for p in err.get("loc", ()) if p != "body"]
        if err.get("type") == "json_invalid":
            loc = []
        # union branches add their type as a location step (`function-after[...]`, `list[TextPart]`): not a
        # field; the last step of an unknown field is the client's own key, kept as it is
        keep = len(loc) - 1 if err.get("type") == "extra_forbidden" else len(loc)
        path = [str(p) for i, p in enumerate(loc) if i >= keep or not _branch(p)]
        by_field.setdefault(".".join(path), []).append(err)
    problems = []
    for where, errs in by_field.items():
        own = [e for e in errs if e.get("type") == "value_error"] or errs  # our own message beats "not a list"
        msgs = dict.fromkeys(_message(e) for e in own)
        problems.append(f"{where or 'body'}: {' or '.join(msgs)}")
    code = "invalid_json" if any(e.get("type") == "json_invalid" for e in errors) else "invalid_request"
    return APIError(400, "; ".join(problems), code=code, param=next((w for w in by_field if w), None))


def _message(err: Any) -> str:
    if err.get("type") == "extra_forbidden":
        return "unknown field (not part of the API)"
    if err.get("type") == "json_invalid":
        return f"invalid JSON ({(err.get('ctx') or {}).get('error', 'cannot be parsed')})"
    return str(err.get("msg", "")).removeprefix("Value error, ")


_MODELS = {name for name, obj in vars(schemas).items() if isinstance(obj, type) and issubclass(obj, BaseModel)}


def _branch(step: Any) -> bool:
    return isinstance(step, str) and ("[" in step or step in _MODELS
                                      or step in ("str", "int", "float", "bool", "none", "list", "dict"))
