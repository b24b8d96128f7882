"""`kifabrik data ...`: import datasets with a usage policy; list, show and remove them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from kifabrik.cli.common import out, print_json, when, workspace

app = typer.Typer(help="Datasets (Datenraum): import with a usage policy, PII protection, dedup and a card.",
                  no_args_is_help=True)


@app.command("import")
def import_(
    paths: Annotated[list[str], typer.Argument(help="Files or folders (JSONL, JSON, CSV/TSV, TXT/MD, PDF).")],
    name: Annotated[str, typer.Option(help="Dataset name.")],
    policy: Annotated[Path | None, typer.Option(help="ODRL 2.2 JSON-LD policy file.")] = None,
    policy_preset: Annotated[str | None, typer.Option(help="internal-only, evaluation-only, research-non-commercial, "
                                                           "open-with-attribution[:PARTY], expires-on:DATE.")] = None,
    test_file: Annotated[list[str] | None, typer.Option(help="Held-out file(s) for the test split (repeatable).")] = None,
    format: Annotated[str, typer.Option(help="auto, chat, instruction, text-jsonl, csv, text or pdf.")] = "auto",
    csv_map: Annotated[str | None, typer.Option(help="CSV columns, e.g. user=Frage,assistant=Antwort or text=Inhalt.")] = None,
    encoding: Annotated[str, typer.Option(help="Text encoding of the files.")] = "utf-8",
    skip_invalid: Annotated[bool, typer.Option("--skip-invalid", help="Import the valid rows; list the bad ones in the card.")] = False,
    pii: Annotated[str, typer.Option(help="redact, drop or report personal data.")] = "redact",
    test_fraction: Annotated[float, typer.Option(help="Share of rows held out for testing.")] = 0.1,
    seed: Annotated[int, typer.Option(help="Seed of the train/test split.")] = 0,
    model: Annotated[str | None, typer.Option(help="Registered model whose tokenizer counts tokens and chunks text.")] = None,
    chunk_size: Annotated[int | None, typer.Option(help="Text chunk size (tokens with --model, else characters).")] = None,
    no_dedup: Annotated[bool, typer.Option("--no-dedup", help="Keep duplicates.")] = False,
    max_line_bytes: Annotated[int, typer.Option(help="Longest accepted line in bytes.")] = 8 * 2**20,
    collected: Annotated[str | None, typer.Option(help="When the data was collected (for the card).")] = None,
    description: Annotated[str | None, typer.Option(help="What the data is (for the card).")] = None,
) -> None:
    """Import data as a dataset: validated line by line, with a usage policy, PII handling, dedup, split and card."""
    from pydantic import ValidationError

    from kifabrik.data import ImportOptions, import_dataset
    from kifabrik.errors import KifabrikError

    raw = {"name": name, "path": paths, "test_path": test_file or None, "policy": str(policy) if policy else None,
           "policy_preset": policy_preset, "format": format, "csv_map": csv_map, "encoding": encoding,
           "skip_invalid": skip_invalid, "pii": pii, "test_fraction": test_fraction, "seed": seed, "model": model,
           "chunk_size": chunk_size, "dedup": not no_dedup, "max_line_bytes": max_line_bytes,
           "collected": collected, "description": description}
    try:
        opts = ImportOptions.model_validate(raw)
    except ValidationError as exc:
        lines = [f"--{'-'.join(str(p) for p in e['loc']).replace('_', '-') or 'options'}: {e['msg']}" for e in exc.errors()]
        raise KifabrikError("invalid options:\n  " + "\n  ".join(lines), hint="see `kifabrik data import --help`") from None
    result = import_dataset(workspace(), opts)
    rec, card = result.record, result.card
    rows, pii_counts = card["rows"], {k: v for k, v in card["pii"]["counts"].items() if v}
    out.print(f"imported dataset [bold]{rec.ref}[/bold]  id {rec.id}")
    out.print(f"  {card['format']} rows: {rows['train']} train, {rows['test']} test; skipped {rows['invalid_skipped']} "
              f"invalid, removed {rows['duplicates_exact']} exact + {rows['duplicates_near']} near duplicates")
    out.print(f"  personal data ({card['pii']['mode']}): {pii_counts or 'none found'}")
    out.print(f"  policy {card['policy']['name']}: " + " ".join(card["policy"]["words"]))
    out.print(f"  card: {workspace().path(rec) / 'card.md'}")


@app.command("list")
def list_(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """List datasets."""
    from kifabrik.data import list_datasets

    recs = list_datasets(workspace())
    if as_json:
        print_json([{"id": r.id, "name": r.name, "version": r.version, "created_at": r.created_at, **r.meta} for r in recs])
        return
    if not recs:
        out.print("no datasets yet; try `kifabrik data import FILE --name NAME --policy-preset internal-only`")
        return
    table = Table("name", "id", "format", "train", "test", "policy", "PII", "created")
    for r in recs:
        m = r.meta
        table.add_row(r.ref, r.id[:12], str(m.get("format")), str(m.get("rows", {}).get("train")),
                      str(m.get("rows", {}).get("test")), str(m.get("policy")),
                      ", ".join(f"{k} {v}" for k, v in (m.get("pii") or {}).items()) or "-", when(r.created_at))
    out.print(table)


@app.command("show")
def show(ref: Annotated[str, typer.Argument(help="Dataset name, name@version or id.")],
         as_json: Annotated[bool, typer.Option("--json", help="Print card.json.")] = False) -> None:
    """Show a dataset's card."""
    import json

    ws = workspace()
    rec = ws.catalog.get_artifact(ref, "dataset")
    if as_json:
        print_json(json.loads((ws.path(rec) / "card.json").read_text(encoding="utf-8")))
        return
    out.print(f"id {rec.id}  path {ws.path(rec)}")
    print((ws.path(rec) / "card.md").read_text(encoding="utf-8"))


@app.command("rm")
def rm(ref: Annotated[str, typer.Argument(help="Dataset name, name@version or id.")]) -> None:
    """Remove a dataset (refused while artifacts made from it exist)."""
    from kifabrik.data import remove_dataset

    rec = remove_dataset(workspace(), ref)
    out.print(f"removed dataset {rec.ref} ({rec.id[:12]})")
