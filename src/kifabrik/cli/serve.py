"""`kifabrik serve`: the OpenAI-compatible API over the catalog's models and adapters."""

from __future__ import annotations

from typing import Annotated

import typer
from pydantic import ValidationError

from kifabrik.cli.common import out, workspace
from kifabrik.errors import KifabrikError


def serve(
    host: Annotated[str, typer.Option(help="Address to bind. Anything but loopback exposes the API to the network.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    models: Annotated[str | None, typer.Option(help="Comma-separated model/adapter names (default: all).")] = None,
    backend: Annotated[str, typer.Option(help="transformers (CPU/GPU) or vllm (GPU, extra `vllm`).")] = "transformers",
    max_batch: Annotated[int, typer.Option(help="Most requests decoded together per base model.")] = 16,
    max_queue: Annotated[int, typer.Option(help="Most waiting requests per base model; more get 429.")] = 64,
    default_max_tokens: Annotated[int, typer.Option(help="max_tokens when a request gives none.")] = 512,
    device: Annotated[str | None, typer.Option(help="cpu, cuda, cuda:1 ... (default: best available).")] = None,
    no_auth: Annotated[bool, typer.Option("--no-auth", help="Serve without API keys (loopback only).")] = False,
    log_content: Annotated[bool, typer.Option("--log-content", help="Write prompts and outputs into the audit log.")] = False,
    no_ai_notice: Annotated[bool, typer.Option("--no-ai-notice", help="Do not tell chat models to disclose that they are an AI (needs --reason).")] = False,
    reason: Annotated[str | None, typer.Option(help="Why --no-ai-notice (recorded in the audit log).")] = None,
    region: Annotated[str | None, typer.Option(help="Deployment region for usage policies (default: $KIFABRIK_REGION).")] = None,
    preload: Annotated[bool, typer.Option("--preload", help="Load every model at start, not on first use.")] = False,
) -> None:
    """Serve every registered model and adapter as an OpenAI-compatible API (Ctrl-C finishes running requests)."""
    from kifabrik.serve import ServeConfig, require_extra, run

    require_extra()
    try:
        config = ServeConfig(host=host, port=port, backend=backend,  # type: ignore[arg-type]  # validated here
                             models=[m.strip() for m in models.split(",") if m.strip()] if models else None,
                             max_batch=max_batch, max_queue=max_queue, default_max_tokens=default_max_tokens,
                             device=device, auth=not no_auth, log_content=log_content, ai_notice=not no_ai_notice,
                             ai_notice_off_reason=reason, region=region, preload=preload)
    except ValidationError as exc:
        raise KifabrikError("; ".join(f"{'.'.join(map(str, e['loc'])) or 'options'}: {e['msg']}" for e in exc.errors()),
                            hint="see `kifabrik serve --help`") from None
    ws = workspace()

    def ready(server: object) -> None:
        from kifabrik.serve.keys import list_keys

        out.print(f"kifabrik serving on http://{config.host}:{config.port}/v1  (OpenAPI: /docs, /openapi.json; "
                  f"/health, /metrics)")
        if config.auth and not [k for k in list_keys(ws) if k.revoked_at is None]:
            out.print("[yellow]no API keys yet[/yellow]: create one with `kifabrik keys create --models NAME`")
        if not config.auth:
            out.print("[yellow]API keys are OFF[/yellow] (loopback only)")
        if config.log_content:
            out.print("[yellow]prompts and outputs are written to the audit log[/yellow] (--log-content)")

    run(ws, config, on_ready=ready)
