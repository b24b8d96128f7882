"""`kifabrik serve`: the OpenAI-compatible API over the catalog's models and adapters."""

from __future__ import annotations

from kifabrik.cli.common import out, workspace
from kifabrik.cli.options import options_command
from kifabrik.serve.state import ServeConfig


def _serve(config: ServeConfig) -> None:
    """Serve every registered model, adapter and Fach-LLM as an OpenAI-compatible API (Ctrl-C finishes running requests)."""
    from kifabrik.serve import require_extra, run

    require_extra()
    if config.models:  # --models a,b as well as --models a --models b
        config = config.model_copy(update={"models": [m.strip() for v in config.models for m in v.split(",") if m.strip()]})
    ws = workspace()

    def ready(server: object) -> None:
        from kifabrik.serve.keys import list_keys

        app = getattr(getattr(server, "config", None), "app", None)  # a uvicorn.Server
        table = getattr(getattr(getattr(app, "state", None), "kf", None), "table", None)
        if table is not None:
            out.print(f"backend: {table.backend_kind} ({table.backend_reason})")

        out.print(f"kifabrik serving on http://{config.host}:{config.port}/v1  (OpenAPI: /docs, /openapi.json; "
                  f"/health, /metrics)")
        if config.auth and not [k for k in list_keys(ws) if k.revoked_at is None]:
            out.print("[yellow]no API keys yet[/yellow]: create one with `kifabrik keys create --models NAME`")
        if not config.auth:
            out.print("[yellow]API keys are OFF[/yellow] (loopback only)")
        if config.log_content:
            out.print("[yellow]prompts and outputs are written to the audit log[/yellow] (--log-content)")

    run(ws, config, on_ready=ready)


#: Every option of `kifabrik serve` comes from `ServeConfig`, so it cannot drift from the Python API.
serve = options_command(_serve, ServeConfig, flags={"ai_notice_off_reason": "reason"})
