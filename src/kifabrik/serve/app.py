"""The FastAPI application: routes, OpenAI-style errors, AI disclosure header, health, metrics."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import kifabrik
from kifabrik.serve.backends.base import EngineOptions
from kifabrik.serve.errors import APIError, model_not_found
from kifabrik.serve.metrics import Metrics
from kifabrik.serve.models import ModelTable, discover
from kifabrik.serve.routes import CurrentKey, router, state_of
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
    options = EngineOptions(max_batch=config.max_batch, max_queue=config.max_queue,
                            batch_wait=config.batch_wait_ms / 1000, device=config.device)
    table = ModelTable(ws, discover(ws, config.models), config.backend, options,
                       on_batch=metrics.batch_size.observe)
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
                  description="OpenAI-compatible API for models and adapters in the kifabrik catalog. "
                              "Every response is marked as AI-generated (header X-AI-Generated, body field "
                              "ai_generated).")
    app.state.kf = state
    app.add_middleware(DisclosureMiddleware)
    app.include_router(router)
    _errors(app)

    @app.get("/v1/models")
    async def list_models(key: CurrentKey) -> dict[str, Any]:
        """The model names this key may use (models and adapters)."""
        data = [_model(s) for n, s in table.served.items() if key is None or key.allows(n)]
        return {"object": "list", "data": data}

    @app.get("/v1/models/{name}")
    async def get_model(name: str, key: CurrentKey) -> dict[str, Any]:
        if name not in table.served or (key is not None and not key.allows(name)):
            raise model_not_found(name)
        return _model(table.served[name])

    @app.get("/health")
    async def health() -> dict[str, Any]:
        """Liveness: the process answers; lists loaded base models and their queues."""
        return {"status": "ok", "models": len(table.served),
                "loaded": {b.base.name: b.stats() for b in table.loaded().values()}}

    @app.get("/metrics")
    async def metrics_endpoint() -> Response:
        body, content_type = metrics.render(table.loaded())
        return Response(body, media_type=content_type)

    return app


def _model(served: Any) -> dict[str, Any]:
    rec = served.record
    return {"id": served.name, "object": "model", "created": int(rec.created_at.timestamp()), "owned_by": "kifabrik",
            "kind": rec.kind, "artifact_id": rec.id, "version": rec.version,
            "root": served.base.name, "parent": served.base.name if rec.kind == "adapter" else None}


def _errors(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers())

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems, param = [], None
        for err in exc.errors():
            loc = [str(p) for p in err.get("loc", ()) if p != "body"]
            param = param or (".".join(loc) or None)
            msg = "unknown field (not part of the API)" if err.get("type") == "extra_forbidden" else err.get("msg")
            problems.append(f"{'.'.join(loc) or 'body'}: {msg}")
        code = "invalid_json" if any(e.get("type") == "json_invalid" for e in exc.errors()) else "invalid_request"
        state = state_of(request)
        state.metrics.rejected.labels(code).inc()
        await run_in_threadpool(state.audit, "serve.request", actor="unknown", subject=None, decision="deny",
                                details={"endpoint": request.url.path, "status": 400, "error": code})
        return JSONResponse(APIError(400, "; ".join(problems), code=code, param=param).body(), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        err = APIError(exc.status_code, str(exc.detail), code="not_found" if exc.status_code == 404 else None)
        return JSONResponse(err.body(), status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def crash(request: Request, exc: Exception) -> JSONResponse:  # a bug: answer, keep serving
        err = APIError(500, f"internal error: {type(exc).__name__}: {exc}", code="internal_error")
        return JSONResponse(err.body(), status_code=500)
