"""Audit in one query: ``wallet_history`` (a row per balance change) and the ``session_gaps``
view (each interval in which an account was not recorded, and whether a complete backfill
covers it).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28

``session_gaps``: for every authenticated session followed by another authenticated one, the
interval from its end (or, if the process died, its last frame) to the next session's
authentication: disconnects and the daemon's own downtime alike. ``seconds`` is its length;
``backfilled`` is true when a complete backfill window covers all of it.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NUMERIC = sa.Numeric()
TSTZ = sa.DateTime(timezone=True)

GAPS = """
CREATE VIEW session_gaps AS
SELECT g.account, g.from_at, g.to_at, {seconds} AS seconds, g.reason,
       {backfilled} AS backfilled
FROM (
    SELECT s.account,
           COALESCE(s.ended_at,
                    (SELECT MAX(e.received_at) FROM events e WHERE e.session_id = s.id),
                    s.authenticated_at) AS from_at,
           (SELECT MIN(n.authenticated_at) FROM sessions n
             WHERE n.account = s.account AND n.id > s.id
               AND n.authenticated_at IS NOT NULL) AS to_at,
           s.end_reason AS reason
    FROM sessions s
    WHERE s.authenticated_at IS NOT NULL
) g
WHERE g.to_at IS NOT NULL
"""
COVERED = (
    "EXISTS (SELECT 1 FROM backfills b WHERE b.account = g.account AND b.complete "
    "AND b.window_from <= g.from_at AND b.window_to >= g.to_at)"
)


def upgrade() -> None:
    op.create_table(
        "wallet_history",
        sa.Column("account", sa.Text(), nullable=False),
        sa.Column("wallet_type", sa.Text(), nullable=False),
        sa.Column("currency", sa.Text(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("ref", sa.BigInteger(), nullable=False),
        sa.Column("at", TSTZ, nullable=True),
        sa.Column("balance", NUMERIC, nullable=True),
        sa.Column("unsettled_interest", NUMERIC, nullable=True),
        sa.Column("available_balance", NUMERIC, nullable=True),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("event_id", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("account", "wallet_type", "currency", "source", "ref"),
    )
    op.create_index(
        "ix_wallet_history_at", "wallet_history", ["account", "wallet_type", "currency", "at"]
    )
    if op.get_bind().dialect.name == "sqlite":
        seconds = "(julianday(g.to_at) - julianday(g.from_at)) * 86400.0"
        backfilled = f"CASE WHEN {COVERED} THEN 1 ELSE 0 END"
    else:
        seconds = "EXTRACT(EPOCH FROM (g.to_at - g.from_at))"
        backfilled = COVERED
    op.execute(GAPS.format(seconds=seconds, backfilled=backfilled))


def downgrade() -> None:
    op.execute("DROP VIEW session_gaps")
    op.drop_index("ix_wallet_history_at", table_name="wallet_history")
    op.drop_table("wallet_history")
