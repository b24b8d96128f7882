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


def _import(home: Path, data: Path, fault: str | None, db: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KIFABRIK_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    if db:
        env["KIFABRIK_DATABASE_URL"] = db
    env.pop("KIFABRIK_FAULT", None)
    if fault:
        env["KIFABRIK_FAULT"] = fault
    return subprocess.run([sys.executable, "-m", "kifabrik.cli.main", "data", "import", str(data), "--name", "chats",
                           "--policy-preset", "evaluation-only"], env=env, capture_output=True, text=True, timeout=300,
                          check=False)


def _fresh_database(url: str, name: str) -> str:
    from sqlalchemy import create_engine, text

    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return url.rsplit("/", 1)[0] + "/" + name


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database(request: pytest.FixtureRequest) -> str | None:
    """None: the home's SQLite file; else the URL of a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return None
    url = request.getfixturevalue("postgres_url")
    return _fresh_database(url, "crash_" + request.node.callspec.id.replace("-", "_").replace("[", "_").strip("]")[:40])


def _open(home: Path, db: str | None) -> Workspace:
    from kifabrik.config import Settings

    if db is None:
        return Workspace.open(home)
    os.environ["KIFABRIK_DATABASE_URL"] = db
    try:
        return Workspace(Settings.from_env(home))
    finally:
        del os.environ["KIFABRIK_DATABASE_URL"]


@pytest.mark.parametrize("point", POINTS)
def test_kill_at_each_step_leaves_all_or_nothing(tmp_path: Path, point: str, database: str | None) -> None:
    home, data = tmp_path / "home", tmp_path / "chats.jsonl"
    data.write_text(ROWS, encoding="utf-8")
    _open(home, database).close()
    killed = _import(home, data, point, database)
    assert killed.returncode == -signal.SIGKILL, killed.stderr

    ws = _open(home, database)
    try:
        found = ws.catalog.list_artifacts("dataset")
        committed = point == "catalog-committed"
        assert len(found) == (1 if committed else 0)
        for rec in found:  # complete: its policy link and its audit entry came with it
            assert [name for _, name, _ in ws.catalog.policies_of(rec.id)] == ["evaluation-only"]
            assert [e.action for e in ws.catalog.audit_entries(subject=rec.id)] == ["data.import"]
        problems = ws.catalog.verify_audit()
        if committed:  # killed between the commit and the head update: the head lags, nothing else
            assert problems and all("missing" in p for p in problems), problems
        else:
            assert problems == []
    finally:
        ws.close()

    again = _import(home, data, None, database)
    assert again.returncode == 0, again.stdout + again.stderr
    ws = _open(home, database)
    try:
        (rec,) = ws.catalog.list_artifacts("dataset")
        assert ws.catalog.policies_of(rec.id) and ws.catalog.audit_entries("data.import", subject=rec.id)
        assert ws.store.path(rec.id).is_dir()
        assert ws.catalog.verify_audit() == []  # the next entry anchors the head again
    finally:
        ws.close()


def test_doctor_finds_and_cleans_what_a_kill_left(tmp_path: Path) -> None:
    home, data = tmp_path / "home", tmp_path / "chats.jsonl"
    data.write_text(ROWS, encoding="utf-8")
    Workspace.open(home).close()
    assert _import(home, data, "catalog-artifact").returncode == -signal.SIGKILL  # files published, no record
    env = {**os.environ, "KIFABRIK_HOME": str(home)}
    child = ("import os, signal; from kifabrik.workspace import Workspace; "
             "print(Workspace.open().catalog.start_run('train', {}, name='t'), flush=True); "
             "os.kill(os.getpid(), signal.SIGKILL)")  # a run whose process is killed before it finishes
    started = subprocess.run([sys.executable, "-c", child], env=env, capture_output=True, text=True, check=False)
    run_id = started.stdout.strip()
    ws = Workspace.open(home)
    (ws.store.root / ".tmp-draft-x").mkdir()
    assert ws.catalog.get_run(run_id).status == "interrupted"
    ws.close()

    # the leftovers are seconds old: --older-than 0 counts them as left behind (tests/test_doctor.py: the grace period)
    cmd = [sys.executable, "-m", "kifabrik.cli.main", "doctor", "--older-than", "0"]
    report = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    assert report.returncode == 1
    assert "folder without a catalog record" in report.stdout and "unfinished draft" in report.stdout
    assert run_id[:12] in report.stdout
    fixed = subprocess.run([*cmd, "--fix"], env=env, capture_output=True, text=True, check=False)
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    assert again.returncode == 0 and "nothing to clean" in again.stdout
    ws = Workspace.open(home)
    try:
        assert not [p for p in ws.store.root.iterdir()]
        assert ws.catalog.get_run(run_id).status == "interrupted"
        assert ws.catalog.audit_entries("doctor.fix")
        assert ws.catalog.verify_audit() == []
    finally:
        ws.close()
