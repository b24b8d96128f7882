"""Four writers at once against one PostgreSQL catalog and one shared store, as jobs of an AI factory run.

Two processes import datasets of one name (their version numbers compete), two train tiny adapters of
one name. Afterwards every artifact verifies, each name's versions are 1..n, ids are unique, the audit
chain is intact and no half-written folder is left in the store.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest

from kifabrik.config import Settings
from kifabrik.workspace import Workspace

IMPORTS_PER_WRITER = 8
#: An importing job: waits for the start file (so that both importers write at the same moment), then
#: runs `kifabrik data import` once per file, in this one process (no interpreter start between them).
IMPORTER = """
import sys, time
from pathlib import Path
import kifabrik.cli.common as common
from kifabrik.cli.main import app
start = Path(sys.argv[1])
while not start.exists():
    time.sleep(0.005)
for f in sys.argv[2:]:
    app(["data", "import", f, "--name", "shared-chats", "--test-fraction", "0", "--policy-preset", "evaluation-only"],
        standalone_mode=False)
common.workspace().close()
"""


def _rows(writer: int, i: int) -> str:
    return "".join(f'{{"messages": [{{"role": "user", "content": "Frage {writer}-{i}-{n}"}}, '
                   f'{{"role": "assistant", "content": "Antwort {n} zur Maschine {writer}"}}]}}\n' for n in range(8))


def _fresh_database(url: str, name: str) -> str:
    from sqlalchemy import create_engine, text

    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return url.rsplit("/", 1)[0] + "/" + name


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "kifabrik.cli.main", *args]


@pytest.mark.postgres
def test_four_writers_share_one_postgresql_catalog(tmp_path: Path, postgres_url: str, tiny_model_dir: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from kifabrik.models.sources import add_model

    db = _fresh_database(postgres_url, "many_writers")
    home = tmp_path / "shared-home"
    env = {**os.environ, "KIFABRIK_HOME": str(home), "KIFABRIK_DATABASE_URL": db, "KIFABRIK_QUIET": "1",
           "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    monkeypatch.setenv("KIFABRIK_DATABASE_URL", db)
    ws = Workspace(Settings.from_env(home))
    add_model(ws, str(tiny_model_dir), name="tiny")
    ws.close()
    train_data = tmp_path / "train.jsonl"
    train_data.write_text(_rows(9, 0) * 3, encoding="utf-8")
    ready = subprocess.run(_cli("data", "import", str(train_data), "--name", "service-chats", "--test-fraction", "0.1",
                                "--policy-preset", "company-internal"),
                           env=env, capture_output=True, text=True, timeout=120, check=False)
    assert ready.returncode == 0, ready.stderr

    start = tmp_path / "start"
    procs = []
    for writer in (1, 2):
        files = []
        for i in range(IMPORTS_PER_WRITER):
            f = tmp_path / f"w{writer}-{i}.jsonl"
            f.write_text(_rows(writer, i), encoding="utf-8")
            files.append(str(f))
        procs.append(subprocess.Popen([sys.executable, "-c", IMPORTER, str(start), *files], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    for seed in (1, 2):
        procs.append(subprocess.Popen(_cli("train", "--base", "tiny", "--data", "service-chats", "--name", "shared-adapter",
                                           "--max-steps", "2", "--batch-size", "2", "--rank", "2", "--alpha", "4",
                                           "--save-steps", "2", "--eval-steps", "2", "--max-seq-length", "64",
                                           "--seed", str(seed)),
                                      env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    time.sleep(3)  # the importers have loaded kifabrik, the trainers are loading torch: all four write at once
    start.touch()
    for p in procs:
        _, stderr = p.communicate(timeout=240)
        assert p.returncode == 0, stderr[-3000:]

    ws = Workspace(Settings.from_env(home))
    try:
        records = ws.catalog.list_artifacts()
        # 1 model, 1 training set, 2 x 8 imports, 2 adapters (other seeds: other content)
        imported = 2 * IMPORTS_PER_WRITER
        assert len(records) == 1 + 1 + imported + 2
        assert len({r.id for r in records}) == len(records)
        versions: dict[tuple[str, str], list[int]] = defaultdict(list)
        for r in records:
            versions[(r.kind, r.name)].append(r.version)
            assert ws.verify(r.id).ok, ws.verify(r.id).problems
        assert sorted(versions[("dataset", "shared-chats")]) == list(range(1, imported + 1))
        assert sorted(versions[("adapter", "shared-adapter")]) == [1, 2]
        assert all(sorted(v) == list(range(1, len(v) + 1)) for v in versions.values())
        assert ws.catalog.verify_audit() == []
        assert [e.action for e in ws.catalog.audit_entries()].count("data.import") == 1 + 2 * IMPORTS_PER_WRITER
        assert ws.catalog.unanchored() == 0
        # nothing half-written in the store: no draft left, every folder complete and recorded
        assert ws.store.leftovers() == []
        folders = {p.name for p in ws.store.root.iterdir() if p.is_dir()}
        assert folders == {r.id for r in records if (ws.store.root / r.id).is_dir()}
        assert all((ws.store.root / f / "manifest.json").is_file() for f in folders)
        runs = ws.catalog.list_runs()
        assert sorted(r.status for r in runs if r.stage == "train") == ["succeeded", "succeeded"]
        assert all(r.usage is not None and r.usage["source"] == "local" and r.usage["cpu_s"] > 0
                   for r in runs if r.stage == "train")  # each job accounted what it used
    finally:
        ws.close()
    verify = subprocess.run(_cli("audit", "verify"), env=env, capture_output=True, text=True, timeout=60, check=False)
    assert verify.returncode == 0, verify.stderr
    for ref in ("shared-chats@1", "shared-adapter@2"):  # the command-line face of the same check
        r = subprocess.run(_cli("verify", ref), env=env, capture_output=True, text=True, timeout=60, check=False)
        assert r.returncode == 0, r.stderr


def test_the_database_refuses_a_second_successor_of_one_audit_entry(ws: Workspace) -> None:
    """The backstop for a writer that skips the lock: two entries chained onto one predecessor cannot both commit."""
    from sqlalchemy.exc import IntegrityError

    from kifabrik.catalog import schema as t
    from kifabrik.catalog.records import utcnow

    first = ws.catalog.audit("test.first")
    ws.catalog.audit("test.second")  # the successor of `first`
    with pytest.raises(IntegrityError), ws.catalog._writer.begin() as s:
        s.add(t.AuditEntry(ts=utcnow(), actor="x", action="test.fork", subject=None, decision=None, details={},
                           prev_hash=first, hash="f" * 64))
    assert ws.catalog.verify_audit() == []
    assert [e.action for e in ws.catalog.audit_entries()] == ["test.first", "test.second"]


def test_a_log_forked_before_the_constraint_still_opens_and_verify_reports_it(tmp_path: Path) -> None:
    from sqlalchemy import text

    from kifabrik.catalog import Catalog
    from kifabrik.catalog.db import make_engine, migrate

    url = f"sqlite:///{tmp_path / 'catalog.db'}"
    engine = make_engine(url)
    migrate(engine, "0006")
    with engine.begin() as conn:  # two successors of the genesis, as unlocked writers could leave
        for seq, digest in ((1, "a" * 64), (2, "b" * 64)):
            conn.execute(text("INSERT INTO audit_log (seq, ts, actor, action, details, prev_hash, hash) "
                              "VALUES (:seq, '2026-12-01 10:00:00', 'cli', 'x', '{}', :prev, :hash)"),
                         {"seq": seq, "prev": "0" * 64, "hash": digest})
    engine.dispose()
    catalog = Catalog(url)  # migrates to head without the constraint
    try:
        assert any("chain broken" in p for p in catalog.verify_audit())
    finally:
        catalog.close()
