"""Runs record the project they are accounted to and the resources they used (wall time, cpus, gpus).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("project", sa.String(100), nullable=False, server_default="default"))
        batch.add_column(sa.Column("usage", sa.JSON))
        batch.create_index("ix_runs_project", ["project"])


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_index("ix_runs_project")
        batch.drop_column("usage")
        batch.drop_column("project")
