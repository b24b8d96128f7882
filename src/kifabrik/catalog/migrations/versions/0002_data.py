"""Data stage: use counters for count-limited usage policies.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "policy_usage",
        sa.Column("artifact_id", sa.String(64), sa.ForeignKey("artifacts.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("policy_id", sa.String(64), sa.ForeignKey("policies.id", ondelete="RESTRICT"), primary_key=True),
        sa.Column("rule", sa.String(200), primary_key=True),
        sa.Column("used", sa.Integer, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("policy_usage")
