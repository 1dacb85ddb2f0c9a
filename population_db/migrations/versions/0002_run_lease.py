"""The run lease: runs.lease_owner and runs.lease_expires_at (one controller per run); the
unused evaluation claim queue's evaluations.lease_expires_at and its index go.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add the run lease columns; drop the evaluation lease column and its index."""
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("lease_owner", sa.String(length=200), nullable=True))
        batch.add_column(sa.Column("lease_expires_at", sa.DateTime(), nullable=True))
    op.drop_index("ix_evaluations_queue", table_name="evaluations")
    with op.batch_alter_table("evaluations") as batch:  # SQLite: the table is copied
        batch.drop_column("lease_expires_at")


def downgrade() -> None:
    """Back to revision 0001."""
    with op.batch_alter_table("evaluations") as batch:
        batch.add_column(sa.Column("lease_expires_at", sa.DateTime(), nullable=True))
    op.create_index("ix_evaluations_queue", "evaluations", ["status", "lease_expires_at"],
                    unique=False)
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("lease_expires_at")
        batch.drop_column("lease_owner")
