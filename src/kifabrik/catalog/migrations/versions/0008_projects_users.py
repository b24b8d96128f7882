"""Projects, users and roles (the KI-Hub web UI): every artifact, policy, API key and audit entry
belongs to a project; names are unique within a project; web sessions and four-eyes release requests.

Everything recorded before this revision belongs to the project `default`.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_SCOPED = ("policies", "api_keys", "audit_log")


def upgrade() -> None:
    op.create_table(
        "projects",
        sa.Column("name", sa.String(100), primary_key=True),
        sa.Column("title", sa.String(200)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "users",
        sa.Column("name", sa.String(100), primary_key=True),
        sa.Column("display_name", sa.String(200)),
        sa.Column("password_hash", sa.Text, nullable=False),
        sa.Column("disabled", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "memberships",
        sa.Column("user_name", sa.String(100), sa.ForeignKey("users.name", ondelete="CASCADE"), primary_key=True),
        sa.Column("project", sa.String(100), sa.ForeignKey("projects.name", ondelete="CASCADE"), primary_key=True),
        sa.Column("role", sa.String(16), nullable=False),
    )
    op.create_table(
        "ui_sessions",
        sa.Column("id_hash", sa.String(64), primary_key=True),
        sa.Column("user_name", sa.String(100), sa.ForeignKey("users.name", ondelete="CASCADE"), nullable=False),
        sa.Column("csrf", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "release_requests",
        sa.Column("id", sa.String(16), primary_key=True),
        sa.Column("project", sa.String(100), nullable=False, index=True),
        sa.Column("artifact_id", sa.String(64), sa.ForeignKey("artifacts.id", ondelete="CASCADE"), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("audience", sa.String(32), nullable=False),
        sa.Column("options", sa.JSON, nullable=False),
        sa.Column("requested_by", sa.String(100), nullable=False),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("decided_by", sa.String(100)),
        sa.Column("decided_at", sa.DateTime(timezone=True)),
        sa.Column("reason", sa.Text),
        sa.Column("release_id", sa.String(64)),
    )
    op.execute("INSERT INTO projects (name, title, created_at) VALUES ('default', 'Default', CURRENT_TIMESTAMP)")
    with op.batch_alter_table("artifacts") as batch:
        batch.add_column(sa.Column("project", sa.String(100), nullable=False, server_default="default"))
        batch.drop_constraint("uq_artifacts_kind_name_version", type_="unique")
        batch.create_unique_constraint("uq_artifacts_project_kind_name_version", ["project", "kind", "name", "version"])
        batch.create_index("ix_artifacts_project", ["project"])
    for table in _SCOPED:
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("project", sa.String(100), nullable=False, server_default="default"))
            batch.create_index(f"ix_{table}_project", ["project"])


def downgrade() -> None:
    for table in _SCOPED:
        with op.batch_alter_table(table) as batch:
            batch.drop_index(f"ix_{table}_project")
            batch.drop_column("project")
    with op.batch_alter_table("artifacts") as batch:
        batch.drop_index("ix_artifacts_project")
        batch.drop_constraint("uq_artifacts_project_kind_name_version", type_="unique")
        batch.create_unique_constraint("uq_artifacts_kind_name_version", ["kind", "name", "version"])
        batch.drop_column("project")
    for table in ("release_requests", "ui_sessions", "memberships", "users", "projects"):
        op.drop_table(table)
