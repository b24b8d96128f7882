"""Removing a knowledge base: its record, its files and its cached index (refused while it is in use)."""

from __future__ import annotations

from kifabrik.catalog import ArtifactRecord
from kifabrik.errors import KifabrikError
from kifabrik.kb.build import get_kb
from kifabrik.kb.search import forget
from kifabrik.workspace import Workspace


def remove_kb(ws: Workspace, ref: str, *, actor: str = "cli") -> ArtifactRecord:
    """Delete a knowledge base's record and files; refused while artifacts were made from it."""
    record = get_kb(ws, ref)
    children = ws.catalog.edges(parent=record.id)
    if children:
        names = ", ".join(ws.catalog.get_artifact(e.child_id).ref for e in children)
        raise KifabrikError(f"knowledge base {record.ref} was used to make {names}",
                            hint=f"remove those first (see `kifabrik lineage {record.ref}`)")
    ws.catalog.remove_artifact(record.id)
    ws.store.remove(record.id)
    forget(record.id)
    ws.catalog.audit("kb.remove", actor=actor, subject=record.id, decision="ok", details={"name": record.ref})
    return record
