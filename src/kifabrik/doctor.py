"""What crashes leave behind, found and cleaned: `kifabrik doctor [--fix]`.

A process killed at the wrong moment (kill -9, the OOM killer, a power cut) can leave:
- draft directories `.tmp-*` in the store (files written, never published);
- published directories without a catalog row (the process died between publishing the files and
  committing the record; the commit is one transaction, so the row is either complete or absent);
- runs still marked `running` whose process is gone (shown as `interrupted`; a re-run is allowed);
- audit entries newer than the anchored head (catalog/anchor.py: a kill between a commit and the
  head update), when the chain itself is intact.
It also reports catalog rows whose directory is missing (not fixable here: restore the files or
remove the record). `--fix` removes the first two and marks the runs interrupted, with one audit entry.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from kifabrik.workspace import Workspace


@dataclass
class Findings:
    drafts: list[tuple[Path, int]] = field(default_factory=list)  # (directory, bytes)
    orphans: list[tuple[Path, int]] = field(default_factory=list)
    interrupted: list[str] = field(default_factory=list)  # run ids
    missing: list[str] = field(default_factory=list)  # artifact refs whose directory is gone
    unanchored: int = 0  # audit entries newer than the anchored head (intact chain; a crash before the head update)

    @property
    def clean(self) -> bool:
        return not (self.drafts or self.orphans or self.interrupted or self.missing or self.unanchored)


def _size(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(root, f)).st_size
            except OSError:
                pass
    return total


def examine(ws: Workspace) -> Findings:
    found = Findings()
    root = ws.store.root
    found.drafts = [(p, _size(p)) for p in ws.store.leftovers()]
    records = ws.catalog.list_artifacts()
    recorded = {r.path for r in records}
    if root.exists():
        found.orphans = [(p, _size(p)) for p in sorted(root.iterdir())
                         if p.is_dir() and not p.name.startswith(".") and p.name not in recorded]
    found.missing = [f"{r.kind} {r.ref} ({r.id[:12]})" for r in records if not (root / r.path).exists()
                     and r.kind != "model"]  # a model may live outside the store (registered in place)
    found.interrupted = ws.catalog.dead_runs()
    if not [p for p in ws.catalog.verify_audit() if "missing" not in p]:  # a lagging head is fixable; tampering is not
        found.unanchored = ws.catalog.unanchored()
    return found


def fix(ws: Workspace, found: Findings) -> None:
    for path, _ in found.drafts + found.orphans:
        shutil.rmtree(path, ignore_errors=True)
    with ws.catalog.transaction():
        for run_id in found.interrupted:
            ws.catalog.finish_run(run_id, "interrupted", error="the process that ran it is gone (found by doctor)")
        ws.catalog.audit("doctor.fix", details={
            "drafts_removed": [p.name for p, _ in found.drafts], "orphans_removed": [p.name for p, _ in found.orphans],
            "bytes_freed": sum(n for _, n in found.drafts + found.orphans), "runs_interrupted": found.interrupted,
            "audit_entries_anchored": found.unanchored})  # this entry moves the head to the newest entry
