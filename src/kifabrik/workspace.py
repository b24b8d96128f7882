"""One handle on a kifabrik installation: settings, catalog and artifact store."""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from kifabrik.artifacts import ArtifactStore, Draft, Verification
from kifabrik.catalog import ArtifactRecord, Catalog, EdgeRecord
from kifabrik.config import Settings
from kifabrik.faults import fault_point
from kifabrik.progress import bar


class Workspace:
    """The catalog and the store of one `$KIFABRIK_HOME` (or database URL).

    Use `create()` for every new artifact: it publishes the files, then records the
    artifact, its lineage and its policy links in one transaction; if recording fails, the
    published directory is removed. Wrap `create()` and the artifact's audit entry in
    `ws.catalog.transaction()` so that they commit together.
    """

    def __init__(self, settings: Settings) -> None:
        created = not settings.home.exists()
        settings.ensure_writable()
        if created:  # the owner's only: the catalog holds API key hashes, the store the artifacts
            os.chmod(settings.home, 0o700)
        self.settings = settings
        self.catalog = Catalog(settings.database_url, home=settings.home)
        self.store = ArtifactStore(settings.store_dir)

    @classmethod
    def open(cls, home: str | Path | None = None) -> Workspace:
        return cls(Settings.from_env(home))

    def scoped(self, project: str) -> Workspace:
        """The same installation seen from inside one project only (`Catalog.scoped`): what the web UI
        hands to every request of a user of `project`. Shares the database engine and the store."""
        view = copy.copy(self)
        view.catalog = self.catalog.scoped(project)
        return view

    def close(self) -> None:
        self.catalog.close()

    def path(self, record: ArtifactRecord) -> Path:
        return self.store.root / record.path

    @contextmanager
    def create(
        self,
        kind: str,
        name: str,
        *,
        parents: Sequence[tuple[str, str] | tuple[str, str, dict[str, Any]]] = (),
        config: dict[str, Any] | None = None,
        meta: dict[str, Any] | None = None,
        policies: list[str] | None = None,
        status: str = "ok",
        progress: Callable[[int], None] | None = None,
    ) -> Iterator[Draft]:
        """Write a new artifact: `with ws.create("model", "x") as draft: ...`; then `draft.record`.

        `parents` are `(artifact_id, relation[, attributes])`. On any exception inside the
        block nothing is published and nothing is recorded.
        """
        draft = self.store.new_draft(kind, name)
        draft.project = self.catalog.project
        draft.inputs = [p[0] for p in parents]
        draft.config = dict(config or {})
        draft.meta = dict(meta or {})
        draft.policies = list(policies or [])
        try:
            yield draft
        except BaseException:
            self.store.discard(draft)
            raise
        try:
            size = _tree_size(draft.dir) + (_tree_size(draft.external_root) if draft.external_root else 0)
            if progress is None and size > 100 * 2**20:
                with bar(f"hashing {kind} {name}", size, bytes_=True) as advance:
                    artifact_id, manifest, created = self.store.publish(draft, advance)
            else:
                artifact_id, manifest, created = self.store.publish(draft, progress)
        except BaseException:
            self.store.discard(draft)
            raise
        fault_point("store-published")
        edges = [EdgeRecord(p[0], artifact_id, p[1], p[2] if len(p) > 2 else {}) for p in parents]
        try:
            # Record, lineage and policy links in one transaction (joined by the caller's
            # `catalog.transaction()`, which adds the audit entry to the same commit).
            with self.catalog.transaction():
                record = self.catalog.add_artifact(id=artifact_id, kind=kind, name=name, path=artifact_id,
                                                   manifest=manifest, meta=draft.meta, parents=edges, status=status)
                fault_point("catalog-artifact")
                for policy_id in draft.policies:
                    self.catalog.attach_policy(artifact_id, policy_id)
                fault_point("catalog-policies")
        except BaseException:
            if created:
                self.store.remove(artifact_id)
            raise
        draft.record = record

    def verify(self, ref: str, progress: Callable[[int], None] | None = None) -> Verification:
        record = self.catalog.get_artifact(ref)
        return self.store.verify(record.id, progress)


def _tree_size(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
