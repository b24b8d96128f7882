"""`kifabrik keys ...`: API keys for `kifabrik serve` (shown once, stored hashed)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from kifabrik.cli.common import err, out, print_json, when, workspace

app = typer.Typer(help="API keys for the served models.", no_args_is_help=True)


@app.command("create")
def create(
    models: Annotated[str, typer.Option(help="Comma-separated model/adapter names the key may use ('*' = all).")],
    rate_limit: Annotated[str | None, typer.Option(help="Most requests per minute, e.g. 60/min.")] = None,
    name: Annotated[str | None, typer.Option(help="A label, e.g. who gets the key.")] = None,
) -> None:
    """Create a key and print it once (only its hash is stored)."""
    from kifabrik.serve.keys import create_key, parse_rate_limit

    rec, key = create_key(workspace(), models.split(","), rate_limit=parse_rate_limit(rate_limit), name=name)
    print(key)
    limit = f"{rec.rate_limit}/min" if rec.rate_limit else "unlimited"
    err.print(f"key {rec.id} for {', '.join(rec.models)} ({limit}). It is shown only now: store it safely.")


@app.command("list")
def list_(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """List keys (ids, scopes, limits; never the keys themselves)."""
    from kifabrik.serve.keys import list_keys

    keys = list_keys(workspace())
    if as_json:
        print_json([k.__dict__ for k in keys])
        return
    if not keys:
        out.print("no API keys; create one with `kifabrik keys create --models NAME`")
        return
    table = Table("id", "name", "models", "rate limit", "created", "revoked")
    for k in keys:
        table.add_row(k.id, k.name or "-", ", ".join(k.models), f"{k.rate_limit}/min" if k.rate_limit else "-",
                      when(k.created_at), when(k.revoked_at))
    out.print(table)


@app.command("revoke")
def revoke(key_id: Annotated[str, typer.Argument(help="Key id (from `keys list`) or the key itself.")]) -> None:
    """Revoke a key; it stops working at once, also on running servers."""
    from kifabrik.serve.keys import revoke_key

    rec = revoke_key(workspace(), key_id)
    out.print(f"revoked key {rec.id}")
