"""The KI-Hub web application: server-rendered pages on FastAPI, nothing fetched from elsewhere.

Every module in `kifabrik.ui.pages` that has a `router` is included, so a page module is all a
new page needs. Errors are pages with the message and how to fix it, never a traceback.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import kifabrik
from kifabrik.errors import KifabrikError, NotFoundError
from kifabrik.ui import pages
from kifabrik.ui.web import PageError, SignIn, language, render
from kifabrik.workspace import Workspace

log = logging.getLogger("kifabrik.ui")
STATIC = Path(__file__).parent / "static"
#: no external origin at all: scripts, styles and images come from this server (works offline)
CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
       "connect-src 'self'; frame-src 'self'; frame-ancestors 'self'; form-action 'self'; base-uri 'none'; "
       "object-src 'none'")


#: the largest request body accepted (uploads are checked per file by the data page, 200 MB)
MAX_BODY = 256 * 2**20


class BodyLimit:
    """Refuse bodies over `MAX_BODY` with 413 before they are spooled to disk, also chunked ones
    (which have no Content-Length): the count is kept while the body is read."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            return await _too_large(send, self.limit)
        seen = 0
        started = False

        async def counting() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _TooLarge
            return message

        async def tracking(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting, tracking)
        except _TooLarge:
            if not started:
                await _too_large(send, self.limit)


class _TooLarge(Exception):
    pass


async def _too_large(send: Send, limit: int) -> None:
    body = f"Request too large: at most {limit // 2**20} MB per request.".encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {k.lower() for k, _ in headers}
                for key, value in ((b"content-security-policy", CSP.encode()), (b"x-content-type-options", b"nosniff"),
                                   (b"referrer-policy", b"same-origin"), (b"x-frame-options", b"SAMEORIGIN")):
                    if key not in names:
                        headers.append((key, value))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _error_page(request: Request, status: int, title: str, message: str, hint: str | None = None) -> Response:
    if request.url.path.startswith("/api/") or "text/event-stream" in request.headers.get("accept", ""):
        return JSONResponse({"error": {"title": title, "message": message, "hint": hint}}, status_code=status)
    lang = language(request)
    return HTMLResponse(render("error.html", request, lang=lang, status=status, title=title, message=message,
                               hint=hint, page=None), status_code=status)


def create_app(ws: Workspace, *, secure_cookies: bool = False) -> FastAPI:
    """The web UI over the installation `ws` (its accounts, and each project through `ws.scoped`)."""
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        for state in (getattr(app.state, "chat_states", None) or {}).values():  # the chat's loaded models
            state.table.close()

    app = FastAPI(title="kifabrik KI-Hub", version=kifabrik.__version__, docs_url=None, redoc_url=None,
                  openapi_url=None, lifespan=lifespan)
    app.state.ws = ws
    app.state.secure_cookies = secure_cookies
    app.add_middleware(SecurityHeaders)
    app.add_middleware(BodyLimit)
    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")

    @app.exception_handler(SignIn)
    async def _sign_in(request: Request, exc: SignIn) -> Response:
        if request.url.path.startswith("/api/"):
            return JSONResponse({"error": {"title": "Sign in", "message": "not signed in"}}, status_code=401)
        url = f"/login?next={quote(exc.next_url, safe='')}" + ("&expired=1" if exc.expired else "")
        return RedirectResponse(url, status_code=303)

    @app.exception_handler(PageError)
    async def _page_error(request: Request, exc: PageError) -> Response:
        return _error_page(request, exc.status, exc.title, exc.message, exc.hint)

    @app.exception_handler(NotFoundError)
    async def _not_found(request: Request, exc: NotFoundError) -> Response:
        return _error_page(request, 404, "Not found",
                           "This page does not exist, or it belongs to a project you are not a member of.")

    @app.exception_handler(KifabrikError)
    async def _kifabrik_error(request: Request, exc: KifabrikError) -> Response:
        return _error_page(request, 400, "Error", exc.message, exc.hint)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 404:
            return await _not_found(request, NotFoundError("not found"))
        return _error_page(request, exc.status_code, "Error", str(exc.detail))

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> Response:  # never a traceback in a page
        log.exception("unexpected error on %s", request.url.path)
        return _error_page(request, 500, "Something went wrong",
                           "The server could not complete this request; the details are in the server's log.")

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok", "version": kifabrik.__version__}

    for info in sorted(pkgutil.iter_modules(pages.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{pages.__name__}.{info.name}")
        if hasattr(module, "router"):
            app.include_router(module.router)
    return app
