"""`kifabrik release ID --name NAME --version V`: a gated, policy-checked release bundle."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from kifabrik.cli.common import out, workspace
from kifabrik.cli.document import CATEGORIES, parse_sources
from kifabrik.cli.options import Flag, ModelFlags
from kifabrik.release.api import ReleaseOptions

#: Every field of ReleaseOptions is a flag but `gates`, a list of structures: they come with `--gate FILE`.
RELEASE = ModelFlags(ReleaseOptions, flags={"gate_file": Flag("gate", metavar="FILE"),
                                            "data_sources": Flag("data-source", type=list[str], parse=parse_sources,
                                                                 metavar="NAME=CATEGORY")},
                     exclude=("gates",), hint=f"categories: {CATEGORIES}")


def _release(opts: ReleaseOptions,
             ref: Annotated[str, typer.Argument(help="Model or adapter: name, name@version or id.")],
             org: Annotated[Path | None, typer.Option("--org", help="YAML with provider, contact, intended_purpose, "
                                                                   "acceptable_use (default: the facts the documents "
                                                                   "it starts from were made with).")] = None) -> None:
    """Release a model or adapter: usage policies and quality gates first, then its documents and the bundle."""
    from kifabrik.document.facts import load_organisation
    from kifabrik.release import release

    organisation = load_organisation(org) if org else None
    ws = workspace()
    rec = release(ws, ref, opts, org=organisation, org_label=f"organisation file {org.name}" if org else None)
    out.print(f"[green]released[/green] ({rec.meta['audience']}) {rec.meta['release_name']} {rec.meta['release_version']} "
              f"({rec.meta['license']}) of {rec.meta['target']}: release {rec.ref} ({rec.id[:12]})")
    for g in rec.meta["gates"]:
        out.print(f"  gate {g['gate']}: passed ({g['reason']})")
    docs = ws.catalog.get_artifact(rec.meta["documents"])
    out.print(f"  documents of this release: {docs.ref} ({docs.id[:12]}), facts not recorded: "
              f"{docs.meta['not_recorded']} (each says why)")
    out.print(f"  {rec.meta['files']} files, {rec.meta['bytes']:,} bytes in {ws.path(rec)}")
    out.print(f"  documents: {ws.path(rec) / 'documents'}")
    out.print(f"  check it: kifabrik verify {rec.id[:12]}  (or: cd {ws.path(rec)} && sha256sum -c SHA256SUMS)")


release_command = RELEASE.command(_release)
