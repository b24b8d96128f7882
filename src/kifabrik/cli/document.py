"""`kifabrik document ID`: the documents of a model or adapter, generated from catalog records."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from kifabrik.cli.common import out, workspace
from kifabrik.cli.options import Flag, ModelFlags, key_values
from kifabrik.document.api import DocumentOptions

CATEGORIES = "public, licensed, third-party, private (your own data), crawled, user, synthetic, other"


def parse_sources(items: list[str]) -> dict[str, str]:
    """`["service=private"]` -> `{"service": "private"}`."""
    return key_values(items, flag="--data-source", expected="NAME=CATEGORY",
                      hint=f"e.g. --data-source service-chats=private ({CATEGORIES})")


#: Every field of DocumentOptions is a flag (`data_sources` is `--data-source`, one per dataset).
DOCUMENT = ModelFlags(DocumentOptions, flags={"data_sources": Flag("data-source", type=list[str], parse=parse_sources,
                                                                    metavar="NAME=CATEGORY")},
                      hint=f"--format md|html|pdf; categories: {CATEGORIES}")


def _document(
    opts: DocumentOptions,
    ref: Annotated[str, typer.Argument(help="Model or adapter: name, name@version or id.")],
    out_dir: Annotated[Path | None, typer.Option("--out", help="Also copy the documents and the ML-BOM here.")] = None,
    org: Annotated[Path | None, typer.Option("--org", help="YAML with provider, contact, intended_purpose, "
                                                          "acceptable_use.")] = None,
    name: Annotated[str | None, typer.Option(help="Name of the document record.")] = None,
) -> None:
    """Generate the model card, AI Act Annex XI/XII, training-content summary, MISSION KI assessment and ML-BOM."""
    from kifabrik.document import document
    from kifabrik.document.facts import load_organisation

    organisation = load_organisation(org) if org else None
    ws = workspace()
    result = document(ws, ref, opts, org=organisation, org_label=f"organisation file {org.name}" if org else
                      "organisation facts (none given)", out=out_dir, name=name)
    rec = result.record
    out.print(f"document {rec.ref} ({rec.id[:12]}) for {rec.meta['target']}: {', '.join(result.files)}")
    out.print(f"  ML-BOM: {rec.meta['bom']}")
    out.print(f"  facts not recorded: {rec.meta['not_recorded']} (each says why; see facts.json)")
    out.print(f"  stored in {ws.path(rec)}")
    if result.out:
        out.print(f"  copied ({opts.format}) to {result.out}")


document_command = DOCUMENT.command(_document)
