"""The data stage ("Datenraum"): import, validate, protect, deduplicate and split datasets.

    from kifabrik.data import ImportOptions, import_dataset
    result = import_dataset(ws, ImportOptions(name="kunden", path="chats.jsonl", policy_preset="internal-only"))

The recipe stage `data` lives in `kifabrik.data.stage`.
"""

from __future__ import annotations

from kifabrik.catalog import ArtifactRecord
from kifabrik.data.importer import KIND, ImportResult, import_dataset
from kifabrik.data.options import DatasetSpec, ImportOptions
from kifabrik.errors import KifabrikError
from kifabrik.workspace import Workspace

__all__ = ["DatasetSpec", "ImportOptions", "ImportResult", "import_dataset", "list_datasets", "remove_dataset"]


def list_datasets(ws: Workspace) -> list[ArtifactRecord]:
    return ws.catalog.list_artifacts(KIND)


def remove_dataset(ws: Workspace, ref: str, *, actor: str = "cli") -> ArtifactRecord:
    """Delete a dataset's record and files; refused while models or evaluations were made from it."""
    record = ws.catalog.get_artifact(ref, KIND)
    if ws.catalog.edges(parent=record.id):
        children = ", ".join(ws.catalog.get_artifact(e.child_id).ref for e in ws.catalog.edges(parent=record.id))
        raise KifabrikError(f"dataset {record.ref} was used to make {children}",
                            hint="remove those first (see `kifabrik lineage " + record.ref + "`)")
    ws.catalog.remove_artifact(record.id)
    ws.store.remove(record.id)
    ws.catalog.audit("data.remove", actor=actor, subject=record.id, decision="ok", details={"name": record.ref})
    return record
