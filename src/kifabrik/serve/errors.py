"""OpenAI-style error bodies: `{"error": {"message", "type", "param", "code"}}`.

Core layer (no FastAPI import), so backends and the key store can raise them too.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

log = logging.getLogger("kifabrik.serve")

_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
          404: "not_found_error", 413: "invalid_request_error", 421: "invalid_request_error",
          429: "rate_limit_error", 500: "server_error", 503: "service_unavailable"}


def printable(text: str) -> str:
    """`text` with lone surrogates written as `\\udXXX`, so that it can always be sent as UTF-8 JSON."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


class APIError(Exception):
    """An HTTP error with an OpenAI-compatible body.

    Args:
        status: HTTP status code.
        message: What was wrong, in words a client developer can act on.
        code: Machine-readable code (`model_not_found`, `invalid_api_key`, `context_length_exceeded`, ...).
        param: The request field at fault, if any.
        retry_after: Seconds a client should wait (429/503), sent as the `Retry-After` header.
    """

    def __init__(self, status: int, message: str, *, code: str | None = None, param: str | None = None,
                 retry_after: int | None = None) -> None:
        message, param = printable(message), printable(param) if param is not None else None
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.retry_after = retry_after

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": _TYPES.get(self.status, "invalid_request_error"),
                          "param": self.param, "code": self.code}}

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)} if self.retry_after is not None else {}


class QueueFull(APIError):
    """The model's bounded queue is full: answered 429 with Retry-After, never queued."""

    def __init__(self, model: str, limit: int, retry_after: int = 1) -> None:
        super().__init__(429, f"the queue of model {model!r} is full ({limit} waiting requests); retry later",
                         code="queue_full", retry_after=retry_after)


class ShuttingDown(APIError):
    def __init__(self) -> None:
        super().__init__(503, "the server is shutting down; retry on another replica or in a moment",
                         code="shutting_down", retry_after=5)


def model_not_found(name: str) -> APIError:
    """404 for a name that is not served *and* for one outside the key's scope (OpenAI's wording and code):
    one answer for both, so that a key limited to some models cannot probe which other names exist."""
    return APIError(404, f"The model `{name}` does not exist or you do not have access to it. "
                         "List the models with GET /v1/models.", code="model_not_found", param="model")


def internal_error(exc: BaseException, what: str = "internal error", code: str = "internal_error") -> APIError:
    """Log `exc` with its traceback under a fresh error id; the client gets the id, never the exception text."""
    error_id = uuid.uuid4().hex[:12]
    log.error("%s (error id %s)", what, error_id, exc_info=exc)
    return APIError(500, f"{what}; the server log has the details under error id {error_id}", code=code)

