"""Serve: an OpenAI-compatible HTTP API over the catalog's models and adapters.

    from kifabrik.serve import ServeConfig, run
    run(ws, ServeConfig(port=8000))             # blocks; Ctrl-C finishes in-flight requests

Importing this package is cheap; FastAPI, uvicorn and torch load only when a server starts
(they come with the `serve` extra: `pip install 'kifabrik[serve]'`).
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING, Any

from kifabrik.errors import KifabrikError
from kifabrik.serve.state import ServeConfig

if TYPE_CHECKING:
    from fastapi import FastAPI

    from kifabrik.workspace import Workspace

EXTRA_MODULES = ("fastapi", "uvicorn", "prometheus_client", "jsonschema")

__all__ = ["ServeConfig", "build_app", "require_extra", "run"]


def require_extra() -> None:
    """Fail with the extra to install when the serving packages are missing."""
    missing = [m for m in EXTRA_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        raise KifabrikError(f"serving needs {', '.join(missing)}, which is not installed",
                            hint="pip install 'kifabrik[serve]'")


def build_app(ws: Workspace, config: ServeConfig | None = None) -> FastAPI:
    """The FastAPI app (for tests and for mounting into another ASGI server)."""
    require_extra()
    from kifabrik.serve.app import create_app

    return create_app(ws, config)


def run(ws: Workspace, config: ServeConfig, *, on_ready: Any = None) -> None:
    """Serve until SIGINT/SIGTERM; then refuse new connections and finish the running requests."""
    app = build_app(ws, config)
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host=config.host, port=config.port, log_level="warning",
                                           timeout_graceful_shutdown=60, access_log=False))
    if on_ready is not None:
        on_ready(server)
    server.run()
