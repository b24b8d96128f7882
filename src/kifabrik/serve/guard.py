"""The ASGI guard in front of every route: Host allow-list, body size cap, and the crash answer.

* Host: a browser page on `evil.example` whose name is re-pointed at 127.0.0.1 (DNS rebinding)
  sends `Host: evil.example`; only the names in `ServeConfig.hosts()` are answered, others get
  421 before anything else runs.
* Body: a body larger than `max_body_bytes` is refused with 413 before it is parsed, from its
  Content-Length when it has one, else (chunked) as soon as the bytes read pass the cap; the
  routes then get the body from memory, so nothing downstream reads more than the cap.
* Crash: an exception no handler took is logged with its traceback under an error id, and the
  client gets a 500 that carries only the id. The exception does not travel on to Starlette's
  ServerErrorMiddleware, which would re-raise it and make uvicorn drop the keep-alive connection.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kifabrik.serve.errors import APIError, internal_error


class Guard:
    """Pure ASGI middleware (no BaseHTTPMiddleware: streaming responses pass through untouched).

    Args:
        app: The application.
        hosts: Accepted Host names (see `ServeConfig.hosts`); None accepts any.
        max_body: Largest request body in bytes.
        on_refused: Called with (path, error) for every request this guard refuses (metrics).
    """

    def __init__(self, app: ASGIApp, *, hosts: frozenset[str] | None, max_body: int,
                 on_refused: Callable[[str, APIError], None]) -> None:
        self.app = app
        self.hosts = hosts
        self.max_body = max_body
        self.on_refused = on_refused

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        host = host_name(headers.get(b"host", b"").decode("latin-1"))
        if self.hosts is not None and host not in self.hosts:
            return await self._refuse(scope, send, APIError(
                421, f"This server does not answer to the host name `{host}`. If clients reach it under that "
                     "name, start it with --allowed-hosts NAME.", code="invalid_host"))
        length = headers.get(b"content-length", b"").decode("latin-1").strip()
        if length.isdigit() and int(length) > self.max_body:
            return await self._refuse(scope, send, self._too_large(f"{int(length):,}"))
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client went away before it finished sending
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                return await self._refuse(scope, send, self._too_large(f"more than {self.max_body:,}"))
            chunks.append(chunk)
            more = message.get("more_body", False)
        body, replayed, started = b"".join(chunks), False, False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # later calls wait for the disconnect, as before

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, replay, tracked)
        except Exception as exc:  # noqa: BLE001 - a bug: log it, answer with its id, keep the connection
            err = internal_error(exc)
            if not started:  # a stream already under way keeps its status; the log has the error
                await send_error(tracked, err)

    def _too_large(self, size: str) -> APIError:
        return APIError(413, f"The request body ({size} bytes) exceeds this server's limit of {self.max_body:,} "
                             "bytes (--max-body-bytes).", code="request_too_large")

    async def _refuse(self, scope: Scope, send: Send, err: APIError) -> None:
        self.on_refused(scope["path"], err)
        await send_error(send, err)


def host_name(header: str) -> str:
    """The name of a Host header, lower case, without port or trailing dot (`[::1]:8000` -> `[::1]`)."""
    host = header.strip().lower()
    if host.startswith("["):
        host = host[:host.find("]") + 1]
    elif host.count(":") == 1:
        host = host.split(":")[0]
    return host.rstrip(".")


async def send_error(send: Send, err: APIError) -> None:
    body = json.dumps(err.body()).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in err.headers().items()]
    await send({"type": "http.response.start", "status": err.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
