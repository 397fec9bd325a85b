"""REST gap backfill: ledger entries, backfill windows, and which REST answer explains each
reconciliation difference.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28

``ledgers`` is folded from ``rest.ledgers-hist`` answers, ``backfills`` from the
``recorder.backfill-start``/``-end`` markers (contract.md "REST gap backfill"). Both are
projections: rebuildable from the log.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NUMERIC = sa.Numeric()
TSTZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "ledgers",
        sa.Column("account", sa.Text(), nullable=False),
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.Text(), nullable=True),
        sa.Column("wallet", sa.Text(), nullable=True),
        sa.Column("mts", TSTZ, nullable=True),
        sa.Column("amount", NUMERIC, nullable=True),
        sa.Column("balance", NUMERIC, nullable=True),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("event_id", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("account", "id"),
    )
    op.create_table(
        "backfills",
        sa.Column("account", sa.Text(), nullable=False),
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("session_id", sa.BigInteger(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("window_from", TSTZ, nullable=True),
        sa.Column("window_to", TSTZ, nullable=True),
        sa.Column("complete", sa.Boolean(), nullable=True),
        sa.Column("requests", sa.BigInteger(), nullable=True),
        sa.Column("rows", sa.BigInteger(), nullable=True),
        sa.Column("event_id", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("account", "id"),
    )
    with op.batch_alter_table("reconciliations") as batch:
        batch.add_column(sa.Column("explained_by", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("reconciliations") as batch:
        batch.drop_column("explained_by")
    op.drop_table("backfills")
    op.drop_table("ledgers")
