"""The audit chain is anchored outside the database: removed or rewritten entries are detected."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

from kifabrik.catalog.auditlog import GENESIS, canonical_json
from kifabrik.workspace import Workspace


def _log(ws: Workspace, n: int = 5) -> None:
    for i in range(n):
        ws.catalog.audit("test.entry", subject=f"s{i}", details={"i": i})


def _db(home: Path) -> sqlite3.Connection:
    return sqlite3.connect(home / "catalog.db")


def test_intact_log_verifies_and_the_head_is_anchored(ws: Workspace) -> None:
    _log(ws)
    assert ws.catalog.verify_audit() == []
    head = ws.catalog.audit_head()
    assert head is not None and head["seq"] == max(e.seq for e in ws.catalog.audit_entries())
    assert (ws.settings.home / "audit.key").stat().st_mode & 0o777 == 0o600


def test_deleting_the_newest_entries_is_detected(ws: Workspace) -> None:
    _log(ws)
    with _db(ws.settings.home) as db:
        db.execute("DELETE FROM audit_log WHERE seq >= (SELECT max(seq) - 1 FROM audit_log)")
    problems = ws.catalog.verify_audit()
    assert any("removed" in p for p in problems), problems


def test_rewriting_an_entry_with_the_chain_recomputed_is_detected(ws: Workspace) -> None:
    _log(ws)
    with _db(ws.settings.home) as db:  # what an attacker with write access to the database can do
        db.execute("UPDATE audit_log SET decision = 'permit' WHERE subject = 's2'")
        prev = GENESIS
        for seq, ts, actor, action, subject, decision, details in db.execute(
                "SELECT seq, ts, actor, action, subject, decision, details FROM audit_log ORDER BY seq").fetchall():
            entries = ws.catalog.audit_entries()
            stamp = next(e.ts for e in entries if e.seq == seq)
            body = {"ts": stamp.isoformat() if stamp.tzinfo else stamp.isoformat() + "+00:00", "actor": actor,
                    "action": action, "subject": subject, "decision": decision, "details": json.loads(details)}
            digest = hashlib.sha256(prev.encode() + canonical_json(body)).hexdigest()
            db.execute("UPDATE audit_log SET prev_hash = ?, hash = ? WHERE seq = ?", (prev, digest, seq))
            prev = digest
    problems = ws.catalog.verify_audit()
    assert not any("content changed" in p or "chain broken" in p for p in problems), problems  # the chain holds
    assert any("rewritten" in p for p in problems), problems  # the anchor does not


def test_an_edited_head_file_is_detected(ws: Workspace) -> None:
    _log(ws)
    path = ws.settings.home / "audit-head.json"
    head = json.loads(path.read_text())
    head["seq"] -= 1
    head["hash"] = ws.catalog.audit_entries()[-2].hash
    path.write_text(json.dumps(head))
    assert any("MAC" in p for p in ws.catalog.verify_audit())


def test_a_bundle_head_pins_the_log_as_it_was(ws: Workspace, tmp_path: Path) -> None:
    _log(ws, 3)
    copy = tmp_path / "audit-head.json"
    copy.write_text(json.dumps(ws.catalog.audit_head()))
    _log(ws, 2)
    assert ws.catalog.verify_audit([copy]) == []
    with _db(ws.settings.home) as db:
        db.execute("DELETE FROM audit_log")
    problems = ws.catalog.verify_audit([copy])
    assert any(str(copy) in p and "removed" in p for p in problems), problems


def test_entries_written_together_chain_in_order_under_one_anchor(ws: Workspace) -> None:
    ws.catalog.audit("test.first")
    hashes = ws.catalog.audit_many([{"action": "test.batch", "subject": f"s{i}", "details": {"i": i}}
                                    for i in range(5)])
    entries = ws.catalog.audit_entries()
    assert [e.hash for e in entries[-5:]] == hashes
    assert [e.subject for e in entries[-5:]] == [f"s{i}" for i in range(5)]
    assert [e.prev_hash for e in entries[-5:]] == [e.hash for e in entries[-6:-1]]
    assert ws.catalog.audit_head()["seq"] == entries[-1].seq
    assert ws.catalog.verify_audit() == []
    assert ws.catalog.audit_many([]) == []
