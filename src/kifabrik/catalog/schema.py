"""Catalog tables (SQLAlchemy 2). Every change here needs an Alembic migration."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class Artifact(Base):
    """A complete artifact in the store (its `manifest.json` exists)."""

    __tablename__ = "artifacts"
    __table_args__ = (UniqueConstraint("project", "kind", "name", "version",
                                       name="uq_artifacts_project_kind_name_version"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True, doc="sha256 of the content manifest")
    project: Mapped[str] = mapped_column(String(100), index=True, default="default", server_default="default",
                                         doc="the project it belongs to (names are unique within one)")
    kind: Mapped[str] = mapped_column(String(32), index=True)
    name: Mapped[str] = mapped_column(String(200), index=True)
    version: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default="ok", doc="ok | failed (e.g. a failed quality gate)")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    path: Mapped[str] = mapped_column(Text, doc="directory in the store, relative to the store root")
    manifest: Mapped[dict[str, Any]] = mapped_column(JSON)
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict, doc="the record shown to users")


class Edge(Base):
    """Lineage: `parent` was used to make `child`."""

    __tablename__ = "lineage"
    __table_args__ = (UniqueConstraint("parent_id", "child_id", "relation", name="uq_lineage_edge"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    parent_id: Mapped[str] = mapped_column(ForeignKey("artifacts.id", ondelete="RESTRICT"), index=True)
    child_id: Mapped[str] = mapped_column(ForeignKey("artifacts.id", ondelete="CASCADE"), index=True)
    relation: Mapped[str] = mapped_column(String(32), doc="e.g. base_model, trained_on, merged_from, evaluated")
    attributes: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict, doc="e.g. merge weight")


class Run(Base):
    """One execution of one stage, successful or not."""

    __tablename__ = "runs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    pipeline_id: Mapped[str | None] = mapped_column(String(32), index=True, doc="groups the stages of one recipe run")
    recipe: Mapped[str | None] = mapped_column(String(200))
    stage: Mapped[str] = mapped_column(String(32))
    name: Mapped[str | None] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), doc="queued | running | succeeded | failed | interrupted | cancelled")
    config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict, doc="the resolved config")
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    error: Mapped[str | None] = mapped_column(Text)
    outputs: Mapped[list[Any]] = mapped_column(JSON, default=list, doc="ids of the artifacts it produced")
    host: Mapped[str | None] = mapped_column(String(255), doc="the machine whose process runs it")
    pid: Mapped[int | None] = mapped_column(Integer, doc="that process (a dead one means interrupted)")
    executor: Mapped[dict[str, Any] | None] = mapped_column(JSON, doc="where it runs, e.g. {kind: slurm, job_id, "
                                                             "state, node, exit_code, log, script}; null: in-process")
    project: Mapped[str] = mapped_column(String(100), index=True, default="default", server_default="default",
                                         doc="who the run is accounted to (--project, KIFABRIK_PROJECT, Slurm account)")
    usage: Mapped[dict[str, Any] | None] = mapped_column(JSON, doc="resources it used, see kifabrik/usage.py: "
                                                          "{wall_s, cpus, gpus, cpu_s, gpu_s, source}; null: running")


class Policy(Base):
    """A usage policy (ODRL 2.2 JSON-LD)."""

    __tablename__ = "policies"

    id: Mapped[str] = mapped_column(String(64), primary_key=True, doc="sha256 of the canonical document "
                                    "(with the project's name in front, outside `default`)")
    project: Mapped[str] = mapped_column(String(100), index=True, default="default", server_default="default")
    name: Mapped[str] = mapped_column(String(200))
    document: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ArtifactPolicy(Base):
    """Which policies apply to an artifact directly (inherited ones follow lineage)."""

    __tablename__ = "artifact_policies"

    artifact_id: Mapped[str] = mapped_column(ForeignKey("artifacts.id", ondelete="CASCADE"), primary_key=True)
    policy_id: Mapped[str] = mapped_column(ForeignKey("policies.id", ondelete="RESTRICT"), primary_key=True)


class AuditEntry(Base):
    """Append-only, hash-chained audit log: `hash = sha256(prev_hash + canonical entry)`."""

    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_subject", "subject"),
                      Index("uq_audit_log_prev_hash", "prev_hash", unique=True))  # the chain cannot fork

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    project: Mapped[str] = mapped_column(String(100), index=True, default="default", server_default="default")
    ts: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str | None] = mapped_column(String(200))
    decision: Mapped[str | None] = mapped_column(String(16))
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64), unique=True)


class PolicyUsage(Base):
    """Uses consumed under one rule of one policy attached to one artifact (table from migration 0002)."""

    __tablename__ = "policy_usage"

    artifact_id: Mapped[str] = mapped_column(ForeignKey("artifacts.id", ondelete="CASCADE"), primary_key=True)
    policy_id: Mapped[str] = mapped_column(ForeignKey("policies.id", ondelete="RESTRICT"), primary_key=True)
    rule: Mapped[str] = mapped_column(String(200), primary_key=True, doc="the rule's uid or JSON path")
    used: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ApiKey(Base):
    """One API key (table created by migration 0003)."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(16), primary_key=True, doc="public key id (shown in listings)")
    project: Mapped[str] = mapped_column(String(100), index=True, default="default", server_default="default")
    hash: Mapped[str] = mapped_column(String(64), unique=True, doc="sha256 of the whole key")
    name: Mapped[str | None] = mapped_column(String(200))
    models: Mapped[list[Any]] = mapped_column(JSON, doc="model names the key may use; ['*'] = all")
    rate_limit: Mapped[int | None] = mapped_column(Integer, doc="requests per minute; null = unlimited")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Project(Base):
    """A project (a company or department): artifacts, policies, keys, runs and audit entries belong to one."""

    __tablename__ = "projects"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    title: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class User(Base):
    """A person who signs in to the web UI (argon2id password hash, never the password)."""

    __tablename__ = "users"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    display_name: Mapped[str | None] = mapped_column(String(200))
    password_hash: Mapped[str] = mapped_column(Text)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Membership(Base):
    """A user's role in one project: viewer < engineer < approver < admin."""

    __tablename__ = "memberships"

    user_name: Mapped[str] = mapped_column(ForeignKey("users.name", ondelete="CASCADE"), primary_key=True)
    project: Mapped[str] = mapped_column(ForeignKey("projects.name", ondelete="CASCADE"), primary_key=True)
    role: Mapped[str] = mapped_column(String(16))


class UiSession(Base):
    """A signed-in browser: only the sha256 of the session token is stored, with its CSRF token."""

    __tablename__ = "ui_sessions"

    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_name: Mapped[str] = mapped_column(ForeignKey("users.name", ondelete="CASCADE"))
    csrf: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ReleaseRequest(Base):
    """Four-eyes release: an engineer requests, a different approver decides."""

    __tablename__ = "release_requests"

    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    project: Mapped[str] = mapped_column(String(100), index=True)
    artifact_id: Mapped[str] = mapped_column(ForeignKey("artifacts.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    version: Mapped[str] = mapped_column(String(64))
    audience: Mapped[str] = mapped_column(String(32))
    options: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    requested_by: Mapped[str] = mapped_column(String(100))
    requested_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    status: Mapped[str] = mapped_column(String(16), doc="pending | released | refused | rejected")
    decided_by: Mapped[str | None] = mapped_column(String(100))
    decided_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    reason: Mapped[str | None] = mapped_column(Text)
    release_id: Mapped[str | None] = mapped_column(String(64))
