"""Periodic snapshots of the folded account state, for fast ``state --at`` on long logs.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27

Each row is the open orders, active positions and wallets (with the folds' flags) right after
event ``event_id``. They are a projection like any other: rebuildable from the log.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "state_snapshots",
        sa.Column("account", sa.Text(), nullable=False),
        sa.Column("event_id", sa.BigInteger(), nullable=False),
        sa.Column(
            "state", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False
        ),
        sa.PrimaryKeyConstraint("account", "event_id"),
    )


def downgrade() -> None:
    op.drop_table("state_snapshots")
