"""The catalog's units of work: one write lock, sessions for reading and writing, and project scoping.

`Store` is the base of `Catalog` and of its parts (`AuditLog`, `ReleaseRequests`); every write goes
through `_write` (inside a `transaction` when one is open), every read through `_read`.
"""

from __future__ import annotations

import contextvars
import copy
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

from sqlalchemy import text
from sqlalchemy.orm import Session

from kifabrik.catalog import schema as t
from kifabrik.catalog.anchor import Anchor
from kifabrik.catalog.db import make_engine, migrate, session_factory, writer_factory
from kifabrik.catalog.records import DEFAULT_PROJECT
from kifabrik.faults import fault_point

#: PostgreSQL advisory lock key that serialises catalog writers (the audit chain needs one writer at a time).
_PG_WRITE_LOCK = 0x6B696661


@dataclass
class _Unit:
    session: Session
    locked: bool = False  # True once the unit has written (and so holds the write lock)
    head: tuple[int, str] | None = None  # the newest audit entry it appended, anchored after the commit


class Store:
    """A catalog database handle: engine, sessions, units of work and the project it works in."""

    def __init__(self, url: str, *, auto_migrate: bool = True, home: Path | None = None,
                 project: str | None = None) -> None:
        """`home`: where the audit chain's head is anchored (catalog/anchor.py); None: not anchored.

        `project`: the project this handle works in (None: `$KIFABRIK_PROJECT`, else `default`). New
        artifacts, policies, API keys and audit entries belong to it, and artifacts are found by name
        and id only inside it (names are unique per project). A handle from `scoped()` is *isolated*:
        it sees nothing of other projects at all, runs and audit entries included — the web UI
        gives every request such a handle, so this class is the one place where projects are kept
        apart. The command line works in one project too, but sees every run and audit entry (it
        reads the whole catalog file anyway; `kifabrik usage` sums runs across projects).
        """
        self.url = url
        self.project = project or os.environ.get("KIFABRIK_PROJECT") or DEFAULT_PROJECT
        self.isolated = False
        self.anchor = Anchor(home) if home is not None else None
        self.engine = make_engine(url)
        if auto_migrate:
            migrate(self.engine)
        self._session = session_factory(self.engine)
        self._writer = writer_factory(self.engine)
        self._unit: contextvars.ContextVar[_Unit | None] = contextvars.ContextVar(f"catalog-unit-{id(self)}",
                                                                                 default=None)

    def close(self) -> None:
        self.engine.dispose()

    def scoped(self, project: str) -> Self:
        """This catalog seen from inside `project` only: the same engine and units of work, isolated."""
        view = copy.copy(self)
        view.project = project
        view.isolated = True
        return view

    def _mine(self, q: Any, table: Any) -> Any:
        """`q` restricted to this handle's project (every artifact, policy, key, request read goes through it)."""
        return q.where(table.project == self.project)

    def _theirs(self, q: Any, table: Any) -> Any:
        """`q` restricted to the project where the handle is isolated (runs, audit entries)."""
        return q.where(table.project == self.project) if self.isolated else q

    def _own(self, s: Session, artifact_id: str) -> t.Artifact | None:
        """The artifact row with this id if it belongs to this project, else None (as if it did not exist)."""
        row = s.get(t.Artifact, artifact_id)
        return row if row is not None and (row.project or DEFAULT_PROJECT) == self.project else None

    # ------------------------------------------------------------------ transactions
    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One unit of work: every catalog write inside the block commits together, or none does.

            with ws.catalog.transaction():
                record = ws.catalog.add_artifact(...)       # artifact + lineage edges
                ws.catalog.attach_policy(record.id, pid)    # its policy links
                ws.catalog.audit("data.import", ...)        # its audit entry

        Nested blocks join the outer one. The write lock is taken at the first write (reads
        before it do not block other writers), so do slow work before writing.
        """
        if self._unit.get() is not None:
            yield
            return
        unit = _Unit(self._writer())
        token = self._unit.set(unit)
        try:
            with unit.session.begin():
                yield
                fault_point("catalog-commit")
        finally:
            self._unit.reset(token)
            unit.session.close()
        fault_point("catalog-committed")
        if unit.head is not None:
            self._anchor(*unit.head)

    @contextmanager
    def _write(self) -> Iterator[Session]:
        """A session for writing: the open unit of work's, else a transaction of its own."""
        unit = self._unit.get()
        if unit is not None:
            if not unit.locked:
                self._lock_writers(unit.session)
                unit.locked = True
            yield unit.session
            unit.session.flush()
            return
        with self._writer.begin() as s:
            self._lock_writers(s)
            yield s

    @contextmanager
    def _read(self) -> Iterator[Session]:
        """A session for reading; inside a unit that has written, the unit's (it sees its own writes)."""
        unit = self._unit.get()
        if unit is not None and unit.locked:
            yield unit.session
            return
        with self._session() as s:
            yield s

    @staticmethod
    def _lock_writers(s: Session) -> None:
        if s.get_bind().dialect.name == "postgresql":  # SQLite: BEGIN IMMEDIATE does it (catalog/db.py)
            s.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_WRITE_LOCK})


    def _anchor(self, seq: int, digest: str) -> None:
        if self.anchor is not None:
            self.anchor.advance(seq, digest)
