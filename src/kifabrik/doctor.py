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

On a store that several jobs share (a cluster's file system), a draft or an unrecorded folder may
be another job's work in progress rather than a crash's leftover. So only those that nothing has
changed in for `older_than` minutes (default 60) count; younger ones are reported as kept, never
removed. "Changed" is the newest modification time of the folder and everything in it: a job that
still writes files keeps its draft young.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, NamedTuple

from kifabrik.workspace import Workspace

#: Minutes without a change before a draft or an unrecorded folder counts as left behind.
DEFAULT_OLDER_THAN = 60


class Kept(NamedTuple):
    """A draft or unrecorded folder too young to remove: perhaps a running job's work in progress."""

    path: Path
    bytes: int
    kind: Literal["draft", "orphan"]
    age_minutes: float  # since the newest change in it


@dataclass
class Findings:
    drafts: list[tuple[Path, int]] = field(default_factory=list)  # (directory, bytes)
    orphans: list[tuple[Path, int]] = field(default_factory=list)
    interrupted: list[str] = field(default_factory=list)  # run ids
    missing: list[str] = field(default_factory=list)  # artifact refs whose directory is gone
    unanchored: int = 0  # audit entries newer than the anchored head (intact chain; a crash before the head update)
    kept: list[Kept] = field(default_factory=list)  # younger than the grace period: not removed
    older_than: float = DEFAULT_OLDER_THAN  # minutes

    @property
    def clean(self) -> bool:
        return not (self.drafts or self.orphans or self.interrupted or self.missing or self.unanchored)


def _size_and_changed(path: Path) -> tuple[int, float]:
    """Bytes in a folder and the newest modification time of it and of everything in it."""
    total, newest = 0, 0.0
    for root, dirs, files in os.walk(path):
        for name in [".", *dirs, *files]:
            try:
                st = os.lstat(os.path.join(root, name))
            except OSError:  # removed while we look: its owner is still at work, or cleaned it
                continue
            newest = max(newest, st.st_mtime)
            if name in files:
                total += st.st_size
    return total, newest


def examine(ws: Workspace, older_than: float = DEFAULT_OLDER_THAN) -> Findings:
    """What a crash left behind; drafts and unrecorded folders changed in the last `older_than`
    minutes are kept (listed in `kept`), since on a shared store they may be a running job's."""
    found = Findings(older_than=older_than)
    root = ws.store.root
    now = time.time()

    def sort(paths: list[Path], kind: Literal["draft", "orphan"]) -> list[tuple[Path, int]]:
        old = []
        for p in paths:
            size, changed = _size_and_changed(p)
            age = (now - changed) / 60
            if age < older_than:
                found.kept.append(Kept(p, size, kind, age))
            else:
                old.append((p, size))
        return old

    # the catalog is read before the store is listed: a folder published after this read and
    # recorded since is young, so kept, not taken for an orphan
    records = ws.catalog.list_artifacts()
    recorded = {r.path for r in records}
    found.drafts = sort(ws.store.leftovers(), "draft")
    if root.exists():
        found.orphans = sort([p for p in sorted(root.iterdir())
                              if p.is_dir() and not p.name.startswith(".") and p.name not in recorded], "orphan")
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
            "kept_younger_than_minutes": found.older_than, "kept": [k.path.name for k in found.kept],
            "audit_entries_anchored": found.unanchored})  # this entry moves the head to the newest entry
