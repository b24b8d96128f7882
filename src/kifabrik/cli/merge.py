"""`kifabrik merge`, `kifabrik adapters ...` and `kifabrik export`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from kifabrik.cli.common import out, print_json, workspace
from kifabrik.cli.options import Flag, ModelFlags
from kifabrik.errors import KifabrikError
from kifabrik.merge.api import MergeOptions

adapters_app = typer.Typer(help="Inspect LoRA adapters.", no_args_is_help=True)


def parse_weighted(spec: str) -> list[dict[str, object]]:
    """`A:0.6,B:0.4` -> [{"adapter": "A", "weight": 0.6}, ...]; a missing weight is 1."""
    items = []
    for part in [p.strip() for p in spec.split(",") if p.strip()]:
        ref, sep, weight = part.rpartition(":")
        if not sep:
            ref, weight = part, "1"
        try:
            items.append({"adapter": ref, "weight": float(weight)})
        except ValueError:
            raise KifabrikError(f"--adapters {part!r}: weight {weight!r} is not a number",
                                hint="write NAME:WEIGHT pairs, e.g. --adapters service:0.6,parts:0.4") from None
    if not items:
        raise KifabrikError("--adapters is empty", hint="e.g. --adapters service:0.6,parts:0.4")
    return items


#: Every field of MergeOptions is a flag; `--adapters` is written NAME:WEIGHT,NAME:WEIGHT.
MERGE = ModelFlags(MergeOptions, flags={"adapters": Flag(type=str, parse=parse_weighted,
                                                         metavar="NAME:WEIGHT,NAME:WEIGHT")})


def _merge(options: MergeOptions, name: Annotated[str, typer.Option(help="Name of the merged artifact.")]) -> None:
    """Merge LoRA adapters into a new adapter or (--into-base) a full model."""
    from kifabrik.merge.api import merge

    rec = merge(workspace(), options, name)
    out.print(f"merged {len(options.adapters)} adapter(s) with {options.method} into {rec.kind} [bold]{rec.ref}[/bold] "
              f"({rec.id[:12]})")
    out.print(f"  {workspace().path(rec)}")


merge_command = MERGE.command(_merge)


@adapters_app.command("list")
def adapters_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List adapters with base model, rank, targets and datasets."""
    from kifabrik.merge.api import describe
    from kifabrik.merge.compat import load_info

    ws = workspace()
    infos = [describe(load_info(ws, r.id)) for r in ws.catalog.list_artifacts("adapter")]
    if as_json:
        print_json(infos)
        return
    table = Table("adapter", "id", "status", "base", "rank", "targets", "datasets")
    for i in infos:
        table.add_row(f"{i['name']}@{i['version']}", i["id"][:12], i["status"], i["base_model"], str(i["rank"]),
                      ",".join(i["target_modules"]), ",".join(d.get("ref", "?") for d in i["datasets"]) or "-")
    out.print(table)


@adapters_app.command("show")
def adapters_show(ref: Annotated[str, typer.Argument(help="Adapter name, name@version or id.")]) -> None:
    """Show one adapter's facts (base weights hash, rank, targets, datasets, policies)."""
    from kifabrik.merge.api import describe
    from kifabrik.merge.compat import load_info

    print_json(describe(load_info(workspace(), ref)))


def export_command(
    model: Annotated[str, typer.Argument(help="Model, merged model or LoRA adapter to export.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Directory to create.")],
    format: Annotated[str, typer.Option("--format", help="hf (transformers/vLLM) or gguf (llama.cpp).")] = "hf",
    quant: Annotated[str | None, typer.Option(
        "--quant", help="gguf: f32, f16, bf16, q8_0 (converter) or q6_k, q5_k_m, q4_k_m, q4_0 (llama.cpp's "
                        "quantiser); default f16; an adapter takes f32, f16, bf16 or q8_0 (llama.cpp's --lora file). "
                        "Recorded in export.json and the audit log.")] = None,
) -> None:
    """Export a model or adapter for other runtimes (transformers/vLLM folder, or GGUF for llama.cpp)."""
    from kifabrik.merge.export import export

    path = export(workspace(), model, out_dir, format, quant=quant)
    out.print(f"exported to {path}")


def gate_command(
    merged: Annotated[str, typer.Argument(help="The merged adapter or model.")],
    metric: Annotated[list[str], typer.Option(help="PARENT=METRIC, e.g. service@1=task.service.acc (repeatable).")],
    min_retention: Annotated[float, typer.Option(help="Required fraction of each parent's score.")] = 0.9,
) -> None:
    """Check that a merge keeps a share of each parent's evaluated score (marks it failed if not)."""
    from kifabrik.merge.gate import check_gate

    pairs = {}
    for item in metric:
        parent, sep, key = item.partition("=")
        if not sep or not parent or not key:
            raise KifabrikError(f"--metric {item!r}: expected PARENT=METRIC", hint="e.g. --metric service=task.service.acc")
        pairs[parent] = key
    for c in check_gate(workspace(), merged, pairs, min_retention):
        out.print(f"[green]pass[/green] {c.parent} {c.metric}: {c.merged_score:.4g} vs {c.parent_score:.4g} "
                  f"({c.retention:.1%})")
