"""The audit chain cannot fork: every entry is the successor of one predecessor (unique prev_hash).

Writers append under the write lock (BEGIN IMMEDIATE on SQLite, an advisory lock on PostgreSQL); the
constraint is the backstop for one that does not, which then retries on the new head. A log that
forked before this revision keeps opening without it (`kifabrik audit verify` reports the fork).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    forked = op.get_bind().execute(sa.text(
        "SELECT prev_hash FROM audit_log GROUP BY prev_hash HAVING COUNT(*) > 1 LIMIT 1")).first()
    if forked is None:
        op.create_index("uq_audit_log_prev_hash", "audit_log", ["prev_hash"], unique=True)


def downgrade() -> None:
    op.drop_index("uq_audit_log_prev_hash", table_name="audit_log")
