"""`kifabrik release ID --name NAME --version V`: a gated, policy-checked release bundle."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from kifabrik.catalog import ArtifactRecord
from kifabrik.cli.common import out, workspace
from kifabrik.errors import KifabrikError
from kifabrik.workspace import Workspace


def release_command(
    ref: Annotated[str, typer.Argument(help="Model or adapter: name, name@version or id.")],
    name: Annotated[str, typer.Option("--name", help="Release name.")],
    version: Annotated[str, typer.Option("--version", help="Release version, e.g. 1.0.0.")],
    license: Annotated[str | None, typer.Option("--license", help="SPDX licence id (default: the documented one).")] = None,
    gate: Annotated[Path | None, typer.Option("--gate", help="YAML file of quality gates, e.g. "
                                              "[{min: {task: werkstatt, metric: acc, value: 0.6}}].")] = None,
    documents: Annotated[str | None, typer.Option(help="Document artifact to bundle (default: the newest of the "
                                                       "model; generated now if there is none).")] = None,
    audience: Annotated[str, typer.Option(help="public, or internal: deployment inside the organisation only "
                                               "(needs a LicenseRef-... licence; the data must permit serving).")] = "public",
) -> None:
    """Release a model or adapter: usage policies and quality gates first, then the bundle."""
    from kifabrik.release import ReleaseOptions, release

    ws = workspace()
    if audience not in ("public", "internal"):
        raise KifabrikError(f"--audience {audience!r} is not known", hint="use public or internal")
    opts = ReleaseOptions(name=name, version=version, license=license, gate_file=str(gate) if gate else None,
                          documents=documents, audience=audience)  # type: ignore[arg-type]
    target = ws.catalog.get_artifact(ref)
    if documents is None and target.kind in ("model", "adapter"):
        ensure_documents(ws, target, license)
    rec = release(ws, target.id, opts)
    out.print(f"[green]released[/green] ({rec.meta['audience']}) {rec.meta['release_name']} {rec.meta['release_version']} "
              f"({rec.meta['license']}) of {rec.meta['target']}: release {rec.ref} ({rec.id[:12]})")
    for g in rec.meta["gates"]:
        out.print(f"  gate {g['gate']}: passed ({g['reason']})")
    out.print(f"  {rec.meta['files']} files, {rec.meta['bytes']:,} bytes in {ws.path(rec)}")
    out.print(f"  documents: {ws.path(rec) / 'documents'}")
    out.print(f"  check it: kifabrik verify {rec.id[:12]}  (or: cd {ws.path(rec)} && sha256sum -c SHA256SUMS)")


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
