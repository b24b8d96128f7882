"""`doctor --fix` on a shared store: drafts and unrecorded folders that changed lately may be another
job's work in progress, so only those unchanged for `--older-than` minutes (default 60) are removed."""

from __future__ import annotations

import os
import time
from pathlib import Path

from kifabrik.workspace import Workspace

TWO_HOURS = 2 * 3600


def _folder(root: Path, name: str, *, age_s: float, file_age_s: float | None = None) -> Path:
    """A folder holding one 1 KiB file; the folder changed `age_s` ago, the file `file_age_s` ago."""
    path = root / name
    path.mkdir(parents=True)
    (path / "part.bin").write_bytes(b"x" * 1024)
    now = time.time()
    file_time = now - (age_s if file_age_s is None else file_age_s)
    os.utime(path / "part.bin", (file_time, file_time))
    os.utime(path, (now - age_s, now - age_s))
    return path


def test_fix_leaves_what_changed_in_the_last_hour(cli, ws: Workspace) -> None:
    root = ws.store.root
    old_draft = _folder(root, ".tmp-crashed", age_s=TWO_HOURS)
    old_orphan = _folder(root, "a" * 32, age_s=TWO_HOURS)
    young_draft = _folder(root, ".tmp-training", age_s=60)
    # an old folder that a job still writes into: its newest file counts, not the folder's own time
    writing = _folder(root, "b" * 32, age_s=TWO_HOURS, file_age_s=5 * 60)

    report = cli("doctor")
    assert report.code == 1, report.out
    assert f"unfinished draft: {old_draft} (1.0 KiB)" in report.out
    assert f"folder without a catalog record: {old_orphan} (1.0 KiB)" in report.out
    assert (f"kept unfinished draft: {young_draft} (1.0 KiB): changed 1 min ago, less than --older-than 60 min, "
            "so it may be a running job's work in progress") in report.out
    assert f"kept folder without a catalog record: {writing} (1.0 KiB): changed 5 min ago" in report.out

    fixed = cli("doctor", "--fix")
    assert fixed.code == 0, fixed.out + fixed.err
    assert "2 folder(s) removed (2.0 KiB), 0 run(s) marked interrupted, 2 young folder(s) kept" in fixed.out
    assert sorted(p.name for p in root.iterdir()) == [".tmp-training", "b" * 32]
    (entry,) = ws.catalog.audit_entries("doctor.fix")
    assert entry.details["drafts_removed"] == [".tmp-crashed"] and entry.details["orphans_removed"] == ["a" * 32]
    assert entry.details["kept"] == [".tmp-training", "b" * 32] and entry.details["kept_younger_than_minutes"] == 60

    again = cli("doctor")
    assert again.code == 0 and "nothing to clean (2 young folder(s) kept)" in again.out

    # a shorter grace period: the folder whose file changed 5 min ago counts as left behind after 3 min,
    # the draft changed 1 min ago does not
    shorter = cli("doctor", "--fix", "--older-than", "3")
    assert shorter.code == 0, shorter.out
    assert "1 folder(s) removed (1.0 KiB)" in shorter.out and "1 young folder(s) kept" in shorter.out
    assert [p.name for p in root.iterdir()] == [".tmp-training"]
    assert ws.catalog.verify_audit() == []


def test_older_than_zero_removes_every_leftover(cli, ws: Workspace) -> None:
    _folder(ws.store.root, ".tmp-just-now", age_s=0)
    fixed = cli("doctor", "--fix", "--older-than", "0")
    assert fixed.code == 0 and "1 folder(s) removed (1.0 KiB), 0 run(s) marked interrupted" in fixed.out
    assert "kept" not in fixed.out
    assert list(ws.store.root.iterdir()) == []


def test_a_negative_grace_period_is_refused(cli, ws: Workspace) -> None:
    r = cli("doctor", "--older-than", "-5")
    assert r.code == 2 and "Traceback" not in r.err
    assert "--older-than" in r.err
