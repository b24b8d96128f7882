"""`kifabrik release ID --name NAME --version V`: a gated, policy-checked release bundle."""

from __future__ import annotations

from typing import Annotated

import typer

from kifabrik.catalog import ArtifactRecord
from kifabrik.cli.common import out, workspace
from kifabrik.cli.options import Flag, ModelFlags
from kifabrik.release.api import ReleaseOptions
from kifabrik.workspace import Workspace

#: Every field of ReleaseOptions is a flag but `gates`, a list of structures: they come with `--gate FILE`.
RELEASE = ModelFlags(ReleaseOptions, flags={"gate_file": Flag("gate", metavar="FILE")}, exclude=("gates",))


def _release(opts: ReleaseOptions,
             ref: Annotated[str, typer.Argument(help="Model or adapter: name, name@version or id.")]) -> None:
    """Release a model or adapter: usage policies and quality gates first, then the bundle."""
    from kifabrik.release import release

    ws = workspace()
    target = ws.catalog.get_artifact(ref)
    if opts.documents is None and target.kind in ("model", "adapter"):
        ensure_documents(ws, target, opts.license)
    rec = release(ws, target.id, opts)
    out.print(f"[green]released[/green] ({rec.meta['audience']}) {rec.meta['release_name']} {rec.meta['release_version']} "
              f"({rec.meta['license']}) of {rec.meta['target']}: release {rec.ref} ({rec.id[:12]})")
    for g in rec.meta["gates"]:
        out.print(f"  gate {g['gate']}: passed ({g['reason']})")
    out.print(f"  {rec.meta['files']} files, {rec.meta['bytes']:,} bytes in {ws.path(rec)}")
    out.print(f"  documents: {ws.path(rec) / 'documents'}")
    out.print(f"  check it: kifabrik verify {rec.id[:12]}  (or: cd {ws.path(rec)} && sha256sum -c SHA256SUMS)")


release_command = RELEASE.command(_release)


def ensure_documents(ws: Workspace, target: ArtifactRecord, license: str | None) -> None:
    """Generate the documents first when none are recorded, or when they state another licence."""
    from kifabrik.document import DocumentOptions, document
    from kifabrik.errors import KifabrikError
    from kifabrik.release.api import (
        newest_documents,
        spdx_licence,
        spdx_licence_or_none,
    )

    try:
        docs = newest_documents(ws, target, None)
    except KifabrikError:
        docs = None
    wanted = spdx_licence(license) if license else None
    if docs is not None and (wanted is None or spdx_licence_or_none(str(docs.meta.get("license"))) == wanted):
        return
    out.print(f"generating the documents of {target.ref}" + (f" for licence {wanted}" if wanted else ""))
    document(ws, target.id, DocumentOptions(license=wanted))
