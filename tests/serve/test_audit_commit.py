"""The server's audit entries: concurrent requests share a commit (group commit), each waits for its own."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from kifabrik.errors import KifabrikError
from kifabrik.serve.metrics import Metrics
from kifabrik.serve.state import ServeConfig, ServerState
from kifabrik.workspace import Workspace


def _state(ws: Workspace) -> ServerState:
    return ServerState(ws, ServeConfig(), None, Metrics())  # type: ignore[arg-type]  # no model table needed


def _audit(state: ServerState, action: str, errors: list[BaseException]) -> None:
    try:
        state.audit(action, actor="key:test", subject=None, decision="permit", details={"n": action})
    except BaseException as exc:  # noqa: BLE001 - collected for the assertion
        errors.append(exc)


def test_entries_that_arrive_during_a_commit_share_the_next(ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    state = _state(ws)
    real = ws.catalog.audit_many
    batches: list[list[str]] = []
    writing, go_on = threading.Event(), threading.Event()

    def audit_many(entries: list[dict[str, Any]]) -> list[str]:
        batches.append([e["action"] for e in entries])
        if len(batches) == 1:
            writing.set()
            go_on.wait(30)  # the first commit is slow: the others queue meanwhile
        return real(entries)

    monkeypatch.setattr(ws.catalog, "audit_many", audit_many)
    errors: list[BaseException] = []
    first = threading.Thread(target=_audit, args=(state, "req.0", errors))
    first.start()
    assert writing.wait(30)
    rest = [threading.Thread(target=_audit, args=(state, f"req.{i}", errors)) for i in range(1, 6)]
    for t in rest:
        t.start()
    deadline = time.monotonic() + 30
    while len(state._pending) < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert all(t.is_alive() for t in rest)  # each waits until its own entry is committed
    go_on.set()
    for t in [first, *rest]:
        t.join(30)
    assert not errors
    assert batches[0] == ["req.0"] and sorted(batches[1]) == [f"req.{i}" for i in range(1, 6)]
    assert state.audit_commits == 2
    written = [e.action for e in ws.catalog.audit_entries() if e.action.startswith("req.")]
    assert sorted(written) == [f"req.{i}" for i in range(6)]
    assert ws.catalog.verify_audit() == []


def test_a_failed_commit_fails_its_entries_and_the_next_one_is_written(ws: Workspace,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    state = _state(ws)
    real = ws.catalog.audit_many

    def broken(entries: list[dict[str, Any]]) -> list[str]:
        raise KifabrikError("database is locked")

    monkeypatch.setattr(ws.catalog, "audit_many", broken)
    with pytest.raises(KifabrikError, match="locked"):
        state.audit("req.lost", actor="key:test", subject=None, decision="permit", details={})
    monkeypatch.setattr(ws.catalog, "audit_many", real)
    state.audit("req.next", actor="key:test", subject=None, decision="permit", details={})
    assert [e.action for e in ws.catalog.audit_entries() if e.action.startswith("req.")] == ["req.next"]
