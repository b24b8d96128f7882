"""`kifabrik policy ...`: presets, validating ODRL files, showing and checking what an artifact may be used for."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from kifabrik.cli.common import out, print_json, workspace

app = typer.Typer(help="Usage policies (ODRL 2.2): presets, validation, restrictions along lineage.", no_args_is_help=True)


@app.command("presets")
def presets(as_json: Annotated[bool, typer.Option("--json", help="Print the ODRL documents.")] = False) -> None:
    """List the policy presets and what they allow."""
    from kifabrik.policy import (
        parse_policy,
        policy_words,
        preset,
        preset_names,
        preset_usage,
    )

    docs = {n: preset(f"{n}:2099-12-31" if n == "expires-on" else n) for n in preset_names()}
    if as_json:
        print_json(docs)
        return
    for usage, (name, doc) in zip(preset_usage(), docs.items(), strict=True):
        out.print(f"[bold]{usage}[/bold]")
        for line in policy_words(parse_policy(doc, name)):
            out.print(f"  {line}")


@app.command("validate")
def validate(path: Annotated[Path, typer.Argument(help="ODRL JSON-LD file.")]) -> None:
    """Check an ODRL policy file and say in words what it allows."""
    from kifabrik.policy import load_policy_file, policy_words

    _, policy = load_policy_file(path)
    out.print(f"[green]valid[/green] ODRL {policy.type} {policy.uid or ''}".rstrip())
    for line in policy_words(policy):
        out.print(f"  {line}")


@app.command("show")
def show(ref: Annotated[str, typer.Argument(help="Artifact name, name@version or id.")],
         as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Show the policies of an artifact and the prohibitions and duties it inherits along lineage."""
    from kifabrik.policy import parse_policy, policy_words, restrictions

    ws = workspace()
    rec = ws.catalog.get_artifact(ref)
    own = ws.catalog.policies_of(rec.id)
    inherited = restrictions(ws, rec.id)
    if as_json:
        print_json({"artifact": rec.id, "policies": [{"id": i, "name": n, "document": d} for i, n, d in own],
                    "restrictions": inherited})
        return
    out.print(f"[bold]{rec.kind} {rec.ref}[/bold] ({rec.id[:12]})")
    for policy_id, name, doc in own:
        out.print(f"policy {name!r} ({policy_id[:12]}):")
        for line in policy_words(parse_policy(doc, name)):
            out.print(f"  {line}")
    if not inherited:
        out.print("no prohibitions or duties" + ("" if own else " (no policy on it or its ancestors)"))
    for r in inherited:
        sources = ", ".join(f"{s['kind']} {s['ref']}" for s in r["sources"])
        out.print(escape(f"{r['kind']}: {r['text']}  [from {sources}, policy {r['policy']!r}]"))


@app.command("check")
def check(ref: Annotated[str, typer.Argument(help="Artifact name, name@version or id.")],
          purpose: Annotated[str, typer.Option(help="training, evaluation, serving, merging, release or commercialUse.")],
          region: Annotated[str | None, typer.Option(help="Deployment region (default: KIFABRIK_REGION or EU).")] = None) -> None:
    """Ask the policy engine whether an artifact may be used for a purpose (the decision is audited)."""
    from kifabrik.policy import check as decide_all
    from kifabrik.policy import require

    ws = workspace()
    rec = ws.catalog.get_artifact(ref)
    require(ws, [rec.id], purpose, actor="cli", region=region)  # raises PolicyDenied (exit 1) on refusal
    out.print(f"[green]permitted[/green]: {purpose} of {rec.kind} {rec.ref}")
    for c in decide_all(ws, [rec.id], purpose, region=region):
        duties = json.dumps(c.details(purpose, region or ws.settings.region)["duties"], ensure_ascii=False)
        out.print(f"  {c.source.kind} {c.source.ref}: {c.decision.reason}" + (f"; duties {duties}" if c.decision.duties else ""))
