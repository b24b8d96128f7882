"""Typed access to the catalog. Returns plain records (catalog/records.py), never live ORM objects.

`Catalog` holds artifacts, lineage edges, runs and policies here; its units of work are in
catalog/store.py, the audit log in catalog/auditlog.py, four-eyes release requests in
catalog/release_requests.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from kifabrik.catalog import schema as t
from kifabrik.catalog.auditlog import canonical_json
from kifabrik.catalog.records import (
    DEFAULT_PROJECT,
    ArtifactRecord,
    EdgeRecord,
    RunRecord,
    artifact_record,
    error_text,
    process_gone,
    run_record,
    set_usage,
    utcnow,
)
from kifabrik.catalog.release_requests import ReleaseRequests
from kifabrik.errors import KifabrikError, NotFoundError

_HEX = re.compile(r"^[0-9a-f]{6,64}$")


class Catalog(ReleaseRequests):
    """The catalog database (SQLite by default, PostgreSQL for shared installations)."""

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
                    return artifact_record(row)
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
                return artifact_record(row)
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
            return artifact_record(rows[0])

    def list_artifacts(self, kind: str | None = None) -> list[ArtifactRecord]:
        with self._read() as s:
            q = self._mine(select(t.Artifact), t.Artifact).order_by(t.Artifact.created_at, t.Artifact.name)
            if kind:
                q = q.where(t.Artifact.kind == kind)
            return [artifact_record(r) for r in s.scalars(q)]

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
            return artifact_record(row)

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
    def lineage_version(self) -> tuple[int, int, int]:
        """(artifacts, lineage edges, newest edge id): changes whenever any artifact's ancestry may have.

        Edges are only added (with a new artifact, or `add_edge`) or removed with their child, and an
        artifact with descendants cannot be removed, so an ancestry that this tuple still matches is
        unchanged (`policy.enforce` caches the ancestry of what it checks on it).
        """
        with self._read() as s:
            row = s.execute(select(select(func.count()).select_from(t.Artifact).scalar_subquery(),
                                   select(func.count()).select_from(t.Edge).scalar_subquery(),
                                   select(func.max(t.Edge.id)).scalar_subquery())).one()
            return int(row[0]), int(row[1]), int(row[2] or 0)

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
                set_usage(row, used)

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
            set_usage(row, used)

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
                    return run_record(row)
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
            return run_record(rows[0])

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
            return [run_record(r) for r in s.scalars(q)]


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
