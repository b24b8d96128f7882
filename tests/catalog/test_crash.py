"""A process killed (SIGKILL) at any step boundary leaves a record complete with its policy and
audit entry, or no record at all; a re-run then succeeds and `doctor --fix` removes the leftovers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from kifabrik.faults import POINTS
from kifabrik.workspace import Workspace

ROWS = "".join(f'{{"messages": [{{"role": "user", "content": "Frage {i}"}}, '
               f'{{"role": "assistant", "content": "Antwort {i} zur Maschine"}}]}}\n' for i in range(12))


def _import(home: Path, data: Path, fault: str | None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KIFABRIK_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    env.pop("KIFABRIK_FAULT", None)
    if fault:
        env["KIFABRIK_FAULT"] = fault
    return subprocess.run([sys.executable, "-m", "kifabrik.cli.main", "data", "import", str(data), "--name", "chats",
                           "--policy-preset", "evaluation-only"], env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("point", POINTS)
def test_kill_at_each_step_leaves_all_or_nothing(tmp_path: Path, point: str) -> None:
    home, data = tmp_path / "home", tmp_path / "chats.jsonl"
    data.write_text(ROWS, encoding="utf-8")
    Workspace.open(home).close()
    killed = _import(home, data, point)
    assert killed.returncode == -signal.SIGKILL, killed.stderr

    ws = Workspace.open(home)
    try:
        found = ws.catalog.list_artifacts("dataset")
        committed = point == "catalog-committed"
        assert len(found) == (1 if committed else 0)
        for rec in found:  # complete: its policy link and its audit entry came with it
            assert [name for _, name, _ in ws.catalog.policies_of(rec.id)] == ["evaluation-only"]
            assert [e.action for e in ws.catalog.audit_entries(subject=rec.id)] == ["data.import"]
        assert ws.catalog.verify_audit() == []
    finally:
        ws.close()

    again = _import(home, data, None)
    assert again.returncode == 0, again.stdout + again.stderr
    ws = Workspace.open(home)
    try:
        (rec,) = ws.catalog.list_artifacts("dataset")
        assert ws.catalog.policies_of(rec.id) and ws.catalog.audit_entries("data.import", subject=rec.id)
        assert ws.store.path(rec.id).is_dir()
    finally:
        ws.close()
