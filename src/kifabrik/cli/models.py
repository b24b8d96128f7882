"""`kifabrik models ...`: register, list, show, remove base models; the European catalogue."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape

from kifabrik.cli import tables
from kifabrik.cli.common import human, out, print_json, workspace
from kifabrik.config import set_offline

app = typer.Typer(help="Register and inspect base models.", no_args_is_help=True)


@app.command("add")
def add(
    source: Annotated[str, typer.Argument(help="embedded:NAME, a Hugging Face folder, a .gguf file, or a hub id.")],
    name: Annotated[str | None, typer.Option(help="Name for the model (default: from the source).")] = None,
    online: Annotated[bool, typer.Option("--online", help="Allow downloading a hub id.")] = False,
    trust_remote_code: Annotated[bool, typer.Option("--trust-remote-code", help="Allow the model's own Python code.")] = False,
    copy: Annotated[bool, typer.Option("--copy", help="Copy a local folder into the store instead of referencing it.")] = False,
    license: Annotated[str | None, typer.Option(help="Licence to record when the model card states none.")] = None,
    accept_terms: Annotated[bool, typer.Option("--accept-terms", help="Accept the licence terms an embedded model "
                                               "requires to be accepted (embedded:gemma3-270m: Gemma Terms of Use).")] = False,
) -> None:
    """Register a base model (converted once to safetensors where needed)."""
    set_offline(online)
    from kifabrik.models.sources import add_model

    rec = add_model(workspace(), source, name=name, online=online, trust_remote_code=trust_remote_code,
                    copy=copy, license=license, accept_terms=accept_terms)
    out.print(f"registered model [bold]{rec.ref}[/bold]  id {rec.id}")
    out.print(f"  {rec.meta.get('architecture')}, {human(rec.meta.get('parameters'))} parameters, "
              f"licence {rec.meta.get('license')}")
    if terms := rec.meta.get("terms"):
        out.print(f"  [yellow]{escape(terms['name'])} accepted[/yellow]: they pass to every adapter, merged model and "
                  f"Fach-LLM built on it ({escape(terms['file'])})")
    for same in rec.meta.get("same_content") or []:
        out.print(f"  [yellow]same weights as {same['kind']} {escape(same['ref'])}[/yellow] ({same['id'][:12]}, "
                  f"{escape(', '.join(same['files']))}): it carries that artifact's usage restrictions "
                  f"(see `kifabrik models show {escape(rec.ref)}`)")


@app.command("list")
def list_(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
          wide: Annotated[bool, typer.Option("--wide", help="Print every cell in full.")] = False) -> None:
    """List registered models."""
    recs = workspace().catalog.list_artifacts("model")
    if as_json:
        print_json([{"id": r.id, "name": r.name, "version": r.version, **{k: v for k, v in r.meta.items()
                                                                           if k != "chat_template"}} for r in recs])
        return
    if not recs:
        out.print("no models registered; try `kifabrik models add embedded:smollm2-135m-instruct`")
        return
    rows = [[r.ref, r.id[:12], str(r.meta.get("architecture")), human(r.meta.get("parameters")),
             str(r.meta.get("license")), str(r.meta.get("source")), tables.ago(r.created_at)] for r in recs]
    tables.show(["name", "id", "architecture", "params", "licence", "source", "created"], rows, wide=wide,
                caps={2: 18, 4: 14}, flex=5, keep="@")


@app.command("show")
def show(ref: Annotated[str, typer.Argument(help="Model name, name@version or id.")],
         as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Show a model's record: source, licence, size, architecture, chat template, weights hash."""
    from kifabrik.cli.records import restriction_text
    from kifabrik.policy import restrictions

    ws = workspace()
    r = ws.catalog.get_artifact(ref, "model")
    carried = restrictions(ws, r.id)
    data = {"id": r.id, "name": r.name, "version": r.version, "status": r.status, "created_at": r.created_at,
            **r.meta, "path": str(ws.path(r)), "restrictions": carried}
    if as_json:
        print_json(data)
        return
    for key, value in data.items():
        if key == "restrictions":
            continue
        if key == "chat_template":
            value = "(none)" if not value else f"{len(value)} characters, starts {value[:60]!r}"
        out.print(f"[bold]{key}[/bold]: {escape(str(value))}")
    print(restriction_text(carried))


@app.command("rm")
def rm(ref: Annotated[str, typer.Argument(help="Model name, name@version or id.")]) -> None:
    """Remove a model (refused while artifacts made from it exist)."""
    from kifabrik.models.sources import remove_model

    rec = remove_model(workspace(), ref)
    out.print(f"removed model {rec.ref} ({rec.id[:12]})")


@app.command("catalog")
def catalog(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Open European models worth specialising, and where to get them."""
    from kifabrik.models.sources import embedded_models, european_models

    models = european_models()
    if as_json:
        print_json({"embedded": embedded_models(), "european": models})
        return
    out.print("[bold]Open European models[/bold] (facts from their model cards)\n")
    for m in models:
        base = f" (base: {m['base_hub_id']})" if m.get("base_hub_id") else ""
        out.print(f"[bold]{m['name']}[/bold]  {m['hub_id']}{base}")
        out.print(f"  licence {m['license']}, {m['parameters']} parameters, context {m['context_length']}, "
                  f"{m['architecture']}, remote code: {'yes' if m['trust_remote_code'] else 'no'}")
        out.print(f"  languages: {m['languages']}")
        out.print(f"  by {m['made_by']}. {m['notes']}\n")
    out.print("Register one with internet access: kifabrik models add HUB_ID --online "
              "(add --trust-remote-code where the table says so),")
    out.print("or copy a downloaded folder here and: kifabrik models add /path/to/folder")
    out.print("Embedded (no network): " + ", ".join(f"embedded:{k}" for k in embedded_models()))
