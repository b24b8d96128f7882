"""`kifabrik document ID`: the documents of a model or adapter, generated from catalog records."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from kifabrik.cli.common import out, workspace
from kifabrik.errors import KifabrikError


def parse_sources(items: list[str]) -> dict[str, str]:
    """`["service=private"]` -> `{"service": "private"}`."""
    pairs = {}
    for item in items:
        name, sep, category = item.partition("=")
        if not sep or not name.strip() or not category.strip():
            raise KifabrikError(f"--data-source {item!r}: expected NAME=CATEGORY",
                                hint="e.g. --data-source service-chats=private "
                                     "(public, licensed, private, crawled, user, synthetic, other)")
        pairs[name.strip()] = category.strip()
    return pairs


def document_command(
    ref: Annotated[str, typer.Argument(help="Model or adapter: name, name@version or id.")],
    format: Annotated[str, typer.Option("--format", help="md, html or pdf (pdf needs the extra `pdf`).")] = "md",
    out_dir: Annotated[Path | None, typer.Option("--out", help="Also copy the documents and the ML-BOM here.")] = None,
    org: Annotated[Path | None, typer.Option("--org", help="YAML with provider, contact, intended_purpose, "
                                                          "acceptable_use.")] = None,
    catalogue: Annotated[str | None, typer.Option(help="MISSION KI VCIO.json or its folder "
                                                       "(default $KIFABRIK_MISSION_KI).")] = None,
    data_source: Annotated[list[str] | None, typer.Option("--data-source", help="Source category of a training "
                                                          "dataset: NAME=public|licensed|private|crawled|user|"
                                                          "synthetic|other (repeatable).")] = None,
    name: Annotated[str | None, typer.Option(help="Name of the document record.")] = None,
) -> None:
    """Generate the model card, AI Act Annex XI/XII, training-content summary, MISSION KI assessment and ML-BOM."""
    from pydantic import ValidationError

    from kifabrik.config import validation_messages
    from kifabrik.document import DocumentOptions, document
    from kifabrik.document.facts import load_organisation

    raw = {"format": format, "catalogue": catalogue, "data_sources": parse_sources(list(data_source or []))}
    try:
        opts = DocumentOptions.model_validate(raw)
    except ValidationError as exc:
        raise KifabrikError("invalid options:\n  " + "\n  ".join(validation_messages(exc, raw, "options")),
                            hint="--format md|html|pdf; categories: public, licensed, private, crawled, user, "
                                 "synthetic, other") from None
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
        out.print(f"  copied ({format}) to {result.out}")
