"""Movements: deposits and withdrawals folded from ``rest.movements-hist`` (the exports'
``movements`` files; the log has held the answers since the backfill began).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)
NUMERIC = sa.Numeric()


def upgrade() -> None:
    op.create_table(
        "movements",
        sa.Column("account", sa.Text(), nullable=False),
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.Text(), nullable=True),
        sa.Column("currency_name", sa.Text(), nullable=True),
        sa.Column("mts_started", TS, nullable=True),
        sa.Column("mts_updated", TS, nullable=True),
        sa.Column("status", sa.Text(), nullable=True),
        sa.Column("amount", NUMERIC, nullable=True),
        sa.Column("fees", NUMERIC, nullable=True),
        sa.Column("address", sa.Text(), nullable=True),
        sa.Column("payment_id", sa.Text(), nullable=True),
        sa.Column("transaction_id", sa.Text(), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("confirmed_by", sa.BigInteger(), nullable=True),
        sa.Column("event_id", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("account", "id"),
    )
    # A projection that is new to a log recorded before it: fold it from the start.
    op.execute("DELETE FROM projector_checkpoints WHERE projector = 'movements'")


def downgrade() -> None:
    op.drop_table("movements")
