"""`kifabrik data ...`: import datasets with a usage policy; list, show and remove them."""

from __future__ import annotations

from typing import Annotated

import typer

from kifabrik.cli import tables
from kifabrik.cli.common import out, print_json, workspace
from kifabrik.cli.options import Flag, ModelFlags
from kifabrik.data.options import ImportOptions

app = typer.Typer(help="Datasets (Datenraum): import with a usage policy, PII protection, dedup and a card.",
                  no_args_is_help=True)


#: Every field of ImportOptions is a flag; the files are the arguments.
IMPORT = ModelFlags(ImportOptions, flags={"path": Flag("paths", argument=True), "test_path": "test-file"})


def _import(opts: ImportOptions) -> None:
    """Import data as a dataset: validated line by line, with a usage policy, PII handling, dedup, split and card."""
    from kifabrik.data import import_dataset

    result = import_dataset(workspace(), opts)
    rec, card = result.record, result.card
    rows, pii_counts = card["rows"], {k: v for k, v in card["pii"]["counts"].items() if v}
    out.print(f"imported dataset [bold]{rec.ref}[/bold]  id {rec.id}")
    out.print(f"  {card['format']} rows: {rows['train']} train, {rows['test']} test; skipped {rows['invalid_skipped']} "
              f"invalid, removed {rows['duplicates_exact']} exact + {rows['duplicates_near']} near duplicates")
    split = card["split"]
    held = f" ({', '.join(split['held_out'])})" if split.get("held_out") else ""
    out.print(f"  split: {split['method']}{held}")
    if card["skipped_links"]:
        n = len(card["skipped_links"])
        out.print(f"  [yellow]skipped {n} symbolic link{'s' if n > 1 else ''}[/yellow] in the folders "
                  "(listed in the card; --follow-links follows those that stay inside the folder)")
    out.print(f"  personal data ({card['pii']['mode']}): {pii_counts or 'none found'}")
    out.print(f"  policy {card['policy']['name']}: " + " ".join(card["policy"]["words"]))
    out.print(f"  card: {workspace().path(rec) / 'card.md'}")


app.command("import")(IMPORT.command(_import))


@app.command("list")
def list_(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
          wide: Annotated[bool, typer.Option("--wide", help="Print every cell in full.")] = False) -> None:
    """List datasets."""
    from kifabrik.data import list_datasets

    recs = list_datasets(workspace())
    if as_json:
        print_json([{"id": r.id, "name": r.name, "version": r.version, "created_at": r.created_at, **r.meta} for r in recs])
        return
    if not recs:
        out.print("no datasets yet; try `kifabrik data import FILE --name NAME --policy-preset internal-only`")
        return
    rows = [[r.ref, r.id[:12], str(r.meta.get("format")), str(r.meta.get("rows", {}).get("train")),
             str(r.meta.get("rows", {}).get("test")), str(r.meta.get("policy")),
             ", ".join(f"{k} {v}" for k, v in (r.meta.get("pii") or {}).items()) or "-", tables.ago(r.created_at)]
            for r in recs]
    tables.show(["name", "id", "format", "train", "test", "policy", "PII", "created"], rows, wide=wide,
                caps={5: 18, 6: 14}, flex=0, keep="@")


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
