"""Typed access to the catalog. Returns plain records, never live ORM objects."""

from __future__ import annotations

import contextvars
import copy
import hashlib
import json
import os
import re
import socket
import traceback
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from kifabrik.catalog import schema as t
from kifabrik.catalog.anchor import Anchor
from kifabrik.catalog.db import make_engine, migrate, session_factory, writer_factory
from kifabrik.errors import KifabrikError, NotFoundError
from kifabrik.faults import fault_point

GENESIS = "0" * 64
#: PostgreSQL advisory lock key that serialises catalog writers (the audit chain needs one writer at a time).
_PG_WRITE_LOCK = 0x6B696661
_HEX = re.compile(r"^[0-9a-f]{6,64}$")
DEFAULT_PROJECT = "default"


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class ArtifactRecord:
    id: str
    kind: str
    name: str
    version: int
    status: str
    created_at: datetime
    path: str
    manifest: dict[str, Any]
    meta: dict[str, Any]
    project: str = "default"

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"


@dataclass(frozen=True)
class EdgeRecord:
    parent_id: str
    child_id: str
    relation: str
    attributes: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RunRecord:
    id: str
    pipeline_id: str | None
    recipe: str | None
    stage: str
    name: str | None
    status: str
    config: dict[str, Any]
    started_at: datetime
    ended_at: datetime | None
    error: str | None
    outputs: list[str]
    host: str | None = None
    pid: int | None = None
    executor: dict[str, Any] | None = None
    project: str = "default"
    usage: dict[str, Any] | None = None  # what it used (kifabrik/usage.py); None while it has not ended


@dataclass(frozen=True)
class ReleaseRequestRecord:
    """A four-eyes release: requested by one user, decided by another (`Catalog.decide_release`)."""

    id: str
    project: str
    artifact_id: str
    name: str
    version: str
    audience: str
    options: dict[str, Any]
    requested_by: str
    requested_at: datetime
    status: str  # pending | approving (claimed) | released | refused (by a policy or gate) | rejected (by the approver)
    decided_by: str | None
    decided_at: datetime | None
    reason: str | None
    release_id: str | None


def _request(row: t.ReleaseRequest) -> ReleaseRequestRecord:
    return ReleaseRequestRecord(row.id, row.project, row.artifact_id, row.name, row.version, row.audience,
                                dict(row.options or {}), row.requested_by, row.requested_at, row.status,
                                row.decided_by, row.decided_at, row.reason, row.release_id)


@dataclass
class _Unit:
    session: Session
    locked: bool = False  # True once the unit has written (and so holds the write lock)
    head: tuple[int, str] | None = None  # the newest audit entry it appended, anchored after the commit


def _artifact(row: t.Artifact) -> ArtifactRecord:
    return ArtifactRecord(row.id, row.kind, row.name, row.version, row.status, row.created_at, row.path, row.manifest,
                          row.meta, row.project or DEFAULT_PROJECT)


def _run(row: t.Run) -> RunRecord:
    status = "interrupted" if row.status == "running" and process_gone(row.host, row.pid, row.started_at) else row.status
    return RunRecord(row.id, row.pipeline_id, row.recipe, row.stage, row.name, status, row.config,
                     row.started_at, row.ended_at, row.error, list(row.outputs or []), row.host, row.pid,
                     dict(row.executor) if row.executor else None, row.project or "default",
                     dict(row.usage) if row.usage else None)


def _set_usage(row: t.Run, used: tuple[dict[str, Any], str | None] | None) -> None:
    """Record what an ended run used; a run left to the default project takes its Slurm job's account."""
    if used is None:
        return
    row.usage, account = used
    if account and (row.project or "default") == "default":
        row.project = account


def process_gone(host: str | None, pid: int | None, started_at: datetime) -> bool:
    """True when the process that started a run on this machine no longer exists (or its pid was reused).

    A run of another machine (a cluster node) cannot be checked from here: False.
    """
    if host != socket.gethostname() or pid is None:
        return False
    import psutil

    try:
        created = datetime.fromtimestamp(psutil.Process(pid).create_time(), UTC)
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return True
    except psutil.Error:
        return False
    started = started_at.replace(tzinfo=UTC) if started_at.tzinfo is None else started_at
    return created.timestamp() > started.timestamp() + 1  # a newer process took the pid


def error_text(exc: BaseException, interrupted: str = "interrupted (Ctrl-C)") -> str:
    """What a failed run records: the message of a user error, else the exception's last line."""
    if isinstance(exc, KifabrikError):
        return str(exc)
    if isinstance(exc, KeyboardInterrupt):
        return interrupted
    return "".join(traceback.format_exception_only(exc)).strip()


def _audit_body(ts: datetime, actor: str, action: str, subject: str | None, decision: str | None,
                details: dict[str, Any], project: str | None) -> dict[str, Any]:
    """What an audit entry's hash covers; its project only outside `default` (older entries hash as before)."""
    body = {"ts": ts.isoformat(), "actor": actor, "action": action, "subject": subject, "decision": decision,
            "details": details}
    if project and project != DEFAULT_PROJECT:
        body["project"] = project
    return body


def canonical_json(data: Any) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str).encode()


class Catalog:
    """The catalog database (SQLite by default, PostgreSQL for shared installations)."""

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

    def scoped(self, project: str) -> Catalog:
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

    # ------------------------------------------------------------------ artifacts
    def add_artifact(
        self,
        *,
        id: str,
        kind: str,
        name: str,
        path: str,
        manifest: dict[str, Any],
        meta: dict[str, Any],
        parents: list[EdgeRecord] | None = None,
        status: str = "ok",
    ) -> ArtifactRecord:
        """Record a published artifact and its lineage edges in one transaction.

        The next version is read under the write lock (BEGIN IMMEDIATE on SQLite, the advisory lock
        on PostgreSQL), so concurrent writers number one name 1, 2, 3, ...; the unique constraint on
        (kind, name, version) stays as the backstop, retried in a savepoint so that an open unit of
        work survives it.
        """
        with self._write() as s:
            for _ in range(3):
                if (row := s.get(t.Artifact, id)) is not None:
                    if (row.project or DEFAULT_PROJECT) != self.project:
                        raise KifabrikError(f"artifact {id[:12]} is recorded in another project",
                                            hint="artifacts outside `default` carry their project in their id; "
                                                 "publish it through this project's workspace")
                    return _artifact(row)
                version = (s.scalar(self._mine(select(func.max(t.Artifact.version)).where(
                    t.Artifact.kind == kind, t.Artifact.name == name), t.Artifact)) or 0) + 1
                row = t.Artifact(id=id, project=self.project, kind=kind, name=name, version=version, status=status,
                                 created_at=utcnow(), path=path, manifest=manifest, meta=meta)
                try:
                    with s.begin_nested():
                        s.add(row)
                except IntegrityError:  # a writer that does not take the lock took this version (or this id)
                    continue
                for edge in parents or []:
                    if self._own(s, edge.parent_id) is None:
                        raise NotFoundError(f"parent artifact {edge.parent_id} is not in the catalog")
                    s.add(t.Edge(parent_id=edge.parent_id, child_id=id, relation=edge.relation,
                                 attributes=edge.attributes))
                return _artifact(row)
        raise KifabrikError(f"could not record artifact {name!r}: concurrent writers kept taking its version number")

    def get_artifact(self, ref: str, kind: str | None = None) -> ArtifactRecord:
        """Resolve `ref`: a full id, a unique id prefix (6+ hex digits), `name` (latest) or `name@version`."""
        with self._read() as s:
            q = self._mine(select(t.Artifact), t.Artifact)
            if kind:
                q = q.where(t.Artifact.kind == kind)
            name, _, ver = ref.partition("@")
            if ver.isdigit():
                rows = list(s.scalars(q.where(t.Artifact.name == name, t.Artifact.version == int(ver))))
            else:
                rows = list(s.scalars(q.where(t.Artifact.name == ref).order_by(t.Artifact.version.desc()).limit(1)))
                if not rows and _HEX.match(ref):
                    rows = list(s.scalars(q.where(t.Artifact.id.startswith(ref)).limit(2)))
                    if len(rows) > 1:
                        raise KifabrikError(f"id prefix {ref!r} is ambiguous", hint="give more digits of the id")
            if not rows:
                what = kind or "artifact"
                raise NotFoundError(f"no {what} {ref!r} in the catalog",
                                    hint=f"list them with `kifabrik {'models' if kind == 'model' else 'artifacts'} list`")
            return _artifact(rows[0])

    def list_artifacts(self, kind: str | None = None) -> list[ArtifactRecord]:
        with self._read() as s:
            q = self._mine(select(t.Artifact), t.Artifact).order_by(t.Artifact.created_at, t.Artifact.name)
            if kind:
                q = q.where(t.Artifact.kind == kind)
            return [_artifact(r) for r in s.scalars(q)]

    def page_artifacts(self, kinds: tuple[str, ...] | None = None, *, limit: int = 50, offset: int = 0,
                       name: str | None = None) -> tuple[list[ArtifactRecord], int]:
        """One page of a listing, newest first, and the total count: what the web UI shows with 1,000s of artifacts.

        The rows come without their manifests (`manifest` is `{}`; `get_artifact` has it): a manifest
        lists every file and can be large, and a listing never needs it.
        """
        from sqlalchemy.orm import defer

        with self._read() as s:
            q = self._mine(select(t.Artifact), t.Artifact)
            if kinds:
                q = q.where(t.Artifact.kind.in_(kinds))
            if name:
                q = q.where(t.Artifact.name.contains(name, autoescape=True))
            total = s.scalar(select(func.count()).select_from(q.subquery())) or 0
            rows = s.scalars(q.options(defer(t.Artifact.manifest)).order_by(t.Artifact.created_at.desc(),
                                                                              t.Artifact.name)
                             .limit(limit).offset(offset))
            return [ArtifactRecord(r.id, r.kind, r.name, r.version, r.status, r.created_at, r.path, {}, r.meta,
                                   r.project or DEFAULT_PROJECT) for r in rows], total

    def set_status(self, artifact_id: str, status: Literal["ok", "failed"], meta_update: dict[str, Any] | None = None) -> None:
        with self._write() as s:
            row = self._own(s, artifact_id)
            if row is None:
                raise NotFoundError(f"no artifact {artifact_id}")
            row.status = status
            if meta_update:
                row.meta = {**row.meta, **meta_update}

    def update_meta(self, artifact_id: str, meta_update: dict[str, Any]) -> ArtifactRecord:
        """Add facts to an artifact's record (the manifest, and so the id, stay as they are)."""
        with self._write() as s:
            row = self._own(s, artifact_id)
            if row is None:
                raise NotFoundError(f"no artifact {artifact_id}")
            row.meta = {**row.meta, **meta_update}
            return _artifact(row)

    def remove_artifact(self, artifact_id: str) -> None:
        """Delete the record; refused while other artifacts were made from it."""
        with self._write() as s:
            if self._own(s, artifact_id) is None:
                raise NotFoundError(f"no artifact {artifact_id}")
            children = list(s.scalars(select(t.Edge.child_id).where(t.Edge.parent_id == artifact_id)))
            if children:
                raise KifabrikError(
                    f"artifact {artifact_id[:12]} has descendants: {', '.join(c[:12] for c in children)}",
                    hint="remove the descendants first (see `kifabrik lineage ID`)",
                )
            s.query(t.Edge).filter(t.Edge.child_id == artifact_id).delete()
            s.query(t.ArtifactPolicy).filter(t.ArtifactPolicy.artifact_id == artifact_id).delete()
            row = self._own(s, artifact_id)
            if row is not None:
                s.delete(row)

    # ------------------------------------------------------------------ lineage
    def edges(self, *, parent: str | None = None, child: str | None = None) -> list[EdgeRecord]:
        with self._read() as s:
            # both ends in this project (lineage never crosses projects: parents must be the project's own)
            q = self._mine(select(t.Edge).join(t.Artifact, t.Artifact.id == t.Edge.child_id), t.Artifact).order_by(t.Edge.id)
            if parent:
                q = q.where(t.Edge.parent_id == parent)
            if child:
                q = q.where(t.Edge.child_id == child)
            return [EdgeRecord(e.parent_id, e.child_id, e.relation, e.attributes) for e in s.scalars(q)]

    def add_edge(self, edge: EdgeRecord) -> EdgeRecord:
        """Record one lineage edge between two artifacts already in the catalog.

        Edges normally come with `add_artifact(parents=...)`; this records one learned
        later (e.g. a dataset an existing adapter was trained on). Recording an edge
        that exists returns it unchanged, attributes included.

        Raises:
            NotFoundError: parent or child is not in the catalog.
        """
        with self._write() as s:
            for end, artifact_id in (("parent", edge.parent_id), ("child", edge.child_id)):
                if self._own(s, artifact_id) is None:
                    raise NotFoundError(f"{end} artifact {artifact_id} is not in the catalog")
            row = s.scalars(select(t.Edge).where(t.Edge.parent_id == edge.parent_id, t.Edge.child_id == edge.child_id,
                                                 t.Edge.relation == edge.relation)).first()
            if row is None:
                row = t.Edge(parent_id=edge.parent_id, child_id=edge.child_id, relation=edge.relation,
                             attributes=dict(edge.attributes))
                s.add(row)
            return EdgeRecord(row.parent_id, row.child_id, row.relation, row.attributes)

    # ------------------------------------------------------------------ runs
    def start_run(self, stage: str, config: dict[str, Any], *, name: str | None = None,
                  pipeline_id: str | None = None, recipe: str | None = None,
                  executor: dict[str, Any] | None = None, project: str | None = None) -> str:
        """Record a run: running in this process, or (with `executor`, e.g. a submitted Slurm job) queued.

        `project`: who it is accounted to; None: `$KIFABRIK_PROJECT`, the Slurm job's account, `default`.
        """
        from kifabrik.usage import DEFAULT_PROJECT, project_from_env

        run_id = uuid.uuid4().hex
        queued = executor is not None
        with self._write() as s:
            s.add(t.Run(id=run_id, pipeline_id=pipeline_id, recipe=recipe, stage=stage, name=name,
                        status="queued" if queued else "running", config=json.loads(canonical_json(config)),
                        started_at=utcnow(), outputs=[], host=None if queued else socket.gethostname(),
                        pid=None if queued else os.getpid(), executor=executor,
                        project=project or (self.project if self.isolated else project_from_env()) or DEFAULT_PROJECT))
        return run_id

    def claim_run(self, run_id: str, *, config: dict[str, Any] | None = None) -> None:
        """This process continues run `run_id` (a resume, or a queued job starting): it is running
        (again), under this host and pid; `config` replaces the recorded one."""
        with self._write() as s:
            row = s.get(t.Run, run_id)
            if row is None:
                raise NotFoundError(f"no run {run_id}")
            if row.status == "queued":  # a submitted job starts: it runs from now (the executor keeps the submission)
                row.executor = {**(row.executor or {}), "submitted_at": row.started_at.isoformat()}
                row.started_at = utcnow()
            row.status, row.ended_at, row.error, row.usage = "running", None, None, None
            row.host, row.pid = socket.gethostname(), os.getpid()
            if config is not None:
                row.config = json.loads(canonical_json(config))
            account = os.environ.get("SLURM_JOB_ACCOUNT", "").strip()
            if account and (row.project or "default") == "default":  # a job of the executor's account
                row.project = account

    def update_executor(self, run_id: str, facts: dict[str, Any], *, status: str | None = None,
                        error: str | None = None) -> None:
        """Merge `facts` into the run's executor record (e.g. a Slurm job's state and node); with `status`,
        end the run so (`cancelled`, or `failed` when its job ended before the run did)."""
        ended = utcnow()
        used = self._usage(run_id, ended, facts) if status is not None else None
        with self._write() as s:
            row = s.get(t.Run, run_id)
            if row is None:
                raise NotFoundError(f"no run {run_id}")
            row.executor = {**(row.executor or {}), **facts}
            if status is not None:
                row.status, row.error, row.ended_at = status, error, ended
                _set_usage(row, used)

    def finish_run(self, run_id: str, status: Literal["succeeded", "failed", "interrupted", "cancelled"], *, error: str | None = None,
                   outputs: list[str] | None = None) -> None:
        ended = utcnow()
        used = self._usage(run_id, ended)  # before the write lock: it may ask Slurm
        with self._write() as s:
            row = s.get(t.Run, run_id)
            if row is None:
                raise NotFoundError(f"no run {run_id}")
            row.status, row.error, row.ended_at = status, error, ended
            row.outputs = list(outputs or [])
            _set_usage(row, used)

    def _usage(self, run_id: str, ended: datetime, facts: dict[str, Any] | None = None) -> tuple[dict[str, Any], str | None] | None:
        """What run `run_id`, ending now, used (and its Slurm account); None when it is not recorded."""
        from kifabrik.usage import measure

        with self._read() as s:
            row = s.get(t.Run, run_id)
            if row is None:
                return None
            here = row.host == socket.gethostname() and row.pid == os.getpid()
            return measure(row.started_at, ended, {**(row.executor or {}), **(facts or {})}, here=here)

    @contextmanager
    def recording(self, run_id: str, *, interrupted: str = "interrupted (Ctrl-C)") -> Iterator[list[str]]:
        """Finish run `run_id` when the block ends: succeeded with the ids appended to the yielded
        list, or failed with the error (a user error's message, else the exception's last line);
        `interrupted` when the error says the run can go on (`resumable`, e.g. a training stopped
        with a checkpoint)."""
        outputs: list[str] = []
        try:
            yield outputs
        except BaseException as exc:
            status = "interrupted" if getattr(exc, "resumable", False) else "failed"
            self.finish_run(run_id, status, error=error_text(exc, interrupted))
            raise
        self.finish_run(run_id, "succeeded", outputs=outputs)

    def reusable_run(self, stage: str, key: str) -> RunRecord | None:
        """The newest succeeded run of `stage` with this reuse key whose outputs are all still recorded."""
        with self._read() as s:
            rows = s.scalars(self._theirs(select(t.Run), t.Run).where(t.Run.stage == stage, t.Run.status == "succeeded")
                             .order_by(t.Run.started_at.desc()))
            for row in rows:
                if (row.config or {}).get("reuse_key") != key or not row.outputs:
                    continue
                if all(self._own(s, i) is not None for i in row.outputs):
                    return _run(row)
        return None

    def dead_runs(self) -> list[str]:
        """Ids of runs recorded as running whose process on this machine is gone (see `process_gone`)."""
        with self._read() as s:
            rows = s.scalars(select(t.Run).where(t.Run.status == "running"))
            return [r.id for r in rows if process_gone(r.host, r.pid, r.started_at)]

    def get_run(self, ref: str) -> RunRecord:
        with self._read() as s:
            q = self._theirs(select(t.Run), t.Run)
            rows = list(s.scalars(q.where(t.Run.id.startswith(ref)).limit(2))) if ref else []
            if len(rows) != 1:
                raise NotFoundError(f"no run {ref!r}" if not rows else f"run id prefix {ref!r} is ambiguous",
                                    hint="list runs with `kifabrik runs list`")
            return _run(rows[0])

    def list_runs(self, pipeline_id: str | None = None, limit: int | None = 50, *, project: str | None = None,
                  since: datetime | None = None) -> list[RunRecord]:
        """Runs, newest first: of one pipeline or project, started at `since` or later; `limit` None: all."""
        with self._read() as s:
            q = self._theirs(select(t.Run), t.Run).order_by(t.Run.started_at.desc())
            if limit is not None:
                q = q.limit(limit)
            if pipeline_id:
                q = q.where(t.Run.pipeline_id == pipeline_id)
            if project is not None:
                q = q.where(t.Run.project == project)
            if since is not None:
                q = q.where(t.Run.started_at >= since)
            return [_run(r) for r in s.scalars(q)]

    # ------------------------------------------------------------------ four-eyes releases
    def request_release(self, artifact_id: str, *, name: str, version: str, audience: str, user: str,
                        options: dict[str, Any] | None = None) -> ReleaseRequestRecord:
        """Record that `user` asks for a release of one of this project's artifacts (audited)."""
        with self.transaction(), self._write() as s:
            if self._own(s, artifact_id) is None:
                raise NotFoundError(f"no artifact {artifact_id}")
            row = t.ReleaseRequest(id=uuid.uuid4().hex[:12], project=self.project, artifact_id=artifact_id, name=name,
                                   version=version, audience=audience, options=dict(options or {}),
                                   requested_by=user, requested_at=utcnow(), status="pending")
            s.add(row)
            s.flush()
            record = _request(row)
            self.audit("release.request", actor=f"user:{user}", subject=artifact_id,
                       details={"request": record.id, "name": name, "version": version, "audience": audience})
        return record

    def release_requests(self, status: str | None = None) -> list[ReleaseRequestRecord]:
        with self._read() as s:
            q = self._mine(select(t.ReleaseRequest), t.ReleaseRequest).order_by(t.ReleaseRequest.requested_at.desc())
            if status is not None:
                q = q.where(t.ReleaseRequest.status == status)
            return [_request(r) for r in s.scalars(q)]

    def get_release_request(self, request_id: str) -> ReleaseRequestRecord:
        with self._read() as s:
            row = s.get(t.ReleaseRequest, request_id)
            if row is None or row.project != self.project:
                raise NotFoundError(f"no release request {request_id!r}")
            return _request(row)

    def _open_request(self, s: Session, request_id: str, user: str, *, claimed: bool = False) -> t.ReleaseRequest:
        row = s.get(t.ReleaseRequest, request_id)
        if row is None or row.project != self.project:
            raise NotFoundError(f"no release request {request_id!r}")
        if row.requested_by == user:
            raise KifabrikError("a release request cannot be approved by the user who made it",
                                hint="four eyes: another user with the approver role decides")
        if not (row.status == "pending" or (claimed and row.status == "approving" and row.decided_by == user)):
            raise KifabrikError(f"release request {request_id} is already {row.status}"
                                + (f" (by {row.decided_by})" if row.decided_by else ""))
        return row

    def claim_release(self, request_id: str, *, user: str) -> ReleaseRequestRecord:
        """Take a pending request for approval (`approving`), so that one approver alone runs its release;
        `decide_release(..., claimed=True)` closes it, `unclaim_release` hands it back."""
        with self._write() as s:
            row = self._open_request(s, request_id, user)
            row.status, row.decided_by = "approving", user
            return _request(row)

    def unclaim_release(self, request_id: str, *, user: str) -> None:
        """A claimed request whose release did not run to an answer goes back to `pending`."""
        with self._write() as s:
            row = s.get(t.ReleaseRequest, request_id)
            if row is not None and row.project == self.project and row.status == "approving" and row.decided_by == user:
                row.status, row.decided_by = "pending", None

    def decide_release(self, request_id: str, *, user: str, status: Literal["released", "refused", "rejected"],
                       reason: str | None = None, release_id: str | None = None,
                       claimed: bool = False) -> ReleaseRequestRecord:
        """Close a pending request (or one `user` claimed). Four eyes: the user who requested it can never decide it."""
        with self.transaction(), self._write() as s:
            row = self._open_request(s, request_id, user, claimed=claimed)
            row.status, row.decided_by, row.decided_at = status, user, utcnow()
            row.reason, row.release_id = reason, release_id
            record = _request(row)
            action = {"released": "release.approve", "refused": "release.approve", "rejected": "release.reject"}[status]
            self.audit(action, actor=f"user:{user}", subject=row.artifact_id,
                       decision="deny" if status != "released" else "permit",
                       details={"request": request_id, "outcome": status, "reason": reason, "release": release_id,
                                "requested_by": row.requested_by})
        return record

    # ------------------------------------------------------------------ policies
    def add_policy(self, name: str, document: dict[str, Any]) -> str:
        scope = b"" if self.project == DEFAULT_PROJECT else self.project.encode() + b"\n"
        policy_id = hashlib.sha256(scope + canonical_json(document)).hexdigest()
        with self._write() as s:
            if s.get(t.Policy, policy_id) is None:
                s.add(t.Policy(id=policy_id, project=self.project, name=name, document=document, created_at=utcnow()))
        return policy_id

    def attach_policy(self, artifact_id: str, policy_id: str) -> None:
        with self._write() as s:
            if s.get(t.ArtifactPolicy, (artifact_id, policy_id)) is None:
                s.add(t.ArtifactPolicy(artifact_id=artifact_id, policy_id=policy_id))

    def policies_of(self, artifact_id: str) -> list[tuple[str, str, dict[str, Any]]]:
        """(id, name, document) of the policies attached directly to an artifact."""
        with self._read() as s:
            q = select(t.Policy).join(t.ArtifactPolicy, t.ArtifactPolicy.policy_id == t.Policy.id).where(
                t.ArtifactPolicy.artifact_id == artifact_id)
            return [(p.id, p.name, p.document) for p in s.scalars(q)]

    # ------------------------------------------------------------------ audit log
    def audit(self, action: str, *, actor: str = "cli", subject: str | None = None,
              decision: str | None = None, details: dict[str, Any] | None = None) -> str:
        """Append one entry to the hash-chained audit log and return its hash."""
        # The head is read under the write lock, so writers chain one after another; the unique
        # prev_hash (migration 0007) is the backstop, retried in a savepoint on the new head.
        with self._write() as s:
            for _ in range(5):
                last = s.scalars(select(t.AuditEntry).order_by(t.AuditEntry.seq.desc()).limit(1)).first()
                prev = last.hash if last else GENESIS
                ts = utcnow()
                body = _audit_body(ts, actor, action, subject, decision, details or {}, self.project)
                digest = hashlib.sha256(prev.encode() + canonical_json(body)).hexdigest()
                row = t.AuditEntry(ts=ts, project=self.project, actor=actor, action=action, subject=subject, decision=decision,
                                   details=details or {}, prev_hash=prev, hash=digest)
                try:
                    with s.begin_nested():
                        s.add(row)
                except IntegrityError:  # a writer without the lock chained onto the same predecessor
                    continue
                head = (row.seq, digest)
                break
            else:
                raise KifabrikError("could not append to the audit log: too many concurrent writers")
        unit = self._unit.get()
        if unit is not None:
            unit.head = head
        else:
            self._anchor(*head)
        return digest

    def audit_entries(self, action: str | None = None, *, subject: str | None = None) -> list[t.AuditEntry]:
        """Audit entries in order, optionally of one action and/or one subject (detached from the session)."""
        with self._read() as s:
            q = self._theirs(select(t.AuditEntry), t.AuditEntry).order_by(t.AuditEntry.seq)
            if action is not None:
                q = q.where(t.AuditEntry.action == action)
            if subject is not None:
                q = q.where(t.AuditEntry.subject == subject)
            rows = list(s.scalars(q))
            for row in rows:
                s.expunge(row)
            return rows

    def _anchor(self, seq: int, digest: str) -> None:
        if self.anchor is not None:
            self.anchor.advance(seq, digest)

    def audit_head(self) -> dict[str, Any] | None:
        """The anchored head of the audit chain ({seq, hash, mac}); None when not anchored yet."""
        return self.anchor.read() if self.anchor is not None else None

    def verify_audit(self, heads: list[Path] | None = None) -> list[str]:
        """Re-compute the hash chain and compare it with the anchored head (and with `heads`, copies
        of earlier heads such as a release bundle's); one message per problem (empty: intact)."""
        problems = []
        prev = GENESIS
        seen: dict[int, str] = {}
        with self._read() as s:
            for e in s.scalars(select(t.AuditEntry).order_by(t.AuditEntry.seq)):
                seen[e.seq] = e.hash
                ts = e.ts.replace(tzinfo=UTC) if e.ts.tzinfo is None else e.ts.astimezone(UTC)
                body = _audit_body(ts, e.actor, e.action, e.subject, e.decision, e.details, e.project)
                expect = hashlib.sha256(prev.encode() + canonical_json(body)).hexdigest()
                if e.prev_hash != prev:
                    problems.append(f"entry {e.seq}: chain broken (an entry before it was removed or reordered)")
                elif e.hash != expect:
                    problems.append(f"entry {e.seq}: content changed after it was written")
                prev = e.hash
        if self.anchor is not None:
            head = self.anchor.read()
            if head is None and seen:
                problems.append(f"{self.anchor.head_path}: missing, so the newest entries cannot be checked "
                                f"(it is written after every entry: a kill at that moment, a home from before "
                                f"anchoring, or a deleted head; `kifabrik doctor --fix` anchors an intact chain)")
            elif head is not None:
                problems += self.anchor.check(head, seen, source=str(self.anchor.head_path))
        for path in heads or []:
            try:
                saved = json.loads(Path(path).read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                problems.append(f"{path}: cannot read a head: {exc}")
                continue
            if self.anchor is not None:
                problems += self.anchor.check(saved, seen, source=str(path))
        return problems

    def unanchored(self) -> int:
        """Entries written after the anchored head (a crash between commit and head update leaves some)."""
        head = self.audit_head() or {"seq": 0}
        with self._read() as s:
            last = s.scalar(select(func.max(t.AuditEntry.seq))) or 0
        return max(0, last - int(head.get("seq", 0) or 0))
