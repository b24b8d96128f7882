"""The catalog's plain records (what `Catalog` returns: never live ORM objects) and the helpers that make them."""

from __future__ import annotations

import socket
import traceback
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from kifabrik.catalog import schema as t
from kifabrik.errors import KifabrikError

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


def request_record(row: t.ReleaseRequest) -> ReleaseRequestRecord:
    return ReleaseRequestRecord(row.id, row.project, row.artifact_id, row.name, row.version, row.audience,
                                dict(row.options or {}), row.requested_by, row.requested_at, row.status,
                                row.decided_by, row.decided_at, row.reason, row.release_id)



def artifact_record(row: t.Artifact) -> ArtifactRecord:
    return ArtifactRecord(row.id, row.kind, row.name, row.version, row.status, row.created_at, row.path, row.manifest,
                          row.meta, row.project or DEFAULT_PROJECT)


def run_record(row: t.Run) -> RunRecord:
    status = "interrupted" if row.status == "running" and process_gone(row.host, row.pid, row.started_at) else row.status
    return RunRecord(row.id, row.pipeline_id, row.recipe, row.stage, row.name, status, row.config,
                     row.started_at, row.ended_at, row.error, list(row.outputs or []), row.host, row.pid,
                     dict(row.executor) if row.executor else None, row.project or "default",
                     dict(row.usage) if row.usage else None)


def set_usage(row: t.Run, used: tuple[dict[str, Any], str | None] | None) -> None:
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

