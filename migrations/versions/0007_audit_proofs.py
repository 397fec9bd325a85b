"""Audit proofs: ledger categories, fill attribution, reconciliations explained by ledger
rows, provenance of REST confirmations, and gaps counted as backfilled only by a window
fetched after them.

* ``ledgers.category``: Bitfinex's category code derived from the description (NULL when the
  text is not recognised).
* ``fill_effects``: one row per balance effect of a fill (audit.md §2).
* ``reconciliation_ledgers``: the ledger rows that explain a wallet reconciliation, exactly.
* ``trades.confirmed_by`` / ``funding_trades.confirmed_by``: the REST answer that repeated a
  trade the socket had already recorded (its ``event_id`` stays the frame's).
* ``session_gaps.backfilled``: only a complete window whose start marker was written after
  the gap ended (a window fetched before the gap, reaching into the future, no longer counts).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NUMERIC = sa.Numeric()

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
OLD_COVERED = (
    "EXISTS (SELECT 1 FROM backfills b WHERE b.account = g.account AND b.complete "
    "AND b.window_from <= g.from_at AND b.window_to >= g.to_at)"
)
# Fetched after the gap ended (the window's start marker was received at or after the
# authentication that ended the gap), and of every endpoint (a 'ledger' window, which keeps
# the ledger complete while connected, fetches only the ledger).
COVERED = (
    "EXISTS (SELECT 1 FROM backfills b JOIN events m ON m.id = b.id "
    "WHERE b.account = g.account AND b.complete "
    "AND b.window_from <= g.from_at AND b.window_to >= g.to_at "
    "AND m.received_at >= g.to_at AND COALESCE(b.reason, '') <> 'ledger')"
)


def _gaps_view(covered: str) -> None:
    op.execute("DROP VIEW IF EXISTS session_gaps")
    if op.get_bind().dialect.name == "sqlite":
        seconds = "(julianday(g.to_at) - julianday(g.from_at)) * 86400.0"
        backfilled = f"CASE WHEN {covered} THEN 1 ELSE 0 END"
    else:
        seconds = "EXTRACT(EPOCH FROM (g.to_at - g.from_at))"
        backfilled = covered
    op.execute(GAPS.format(seconds=seconds, backfilled=backfilled))


def upgrade() -> None:
    with op.batch_alter_table("ledgers") as batch:
        batch.add_column(sa.Column("category", sa.BigInteger(), nullable=True))
    for table in ("trades", "funding_trades"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("confirmed_by", sa.BigInteger(), nullable=True))
    op.create_table(
        "fill_effects",
        sa.Column("account", sa.Text(), nullable=False),
        sa.Column("trade_id", sa.BigInteger(), nullable=False),
        sa.Column("wallet_type", sa.Text(), nullable=False),
        sa.Column("currency", sa.Text(), nullable=False),
        sa.Column("part", sa.Text(), nullable=False),
        sa.Column("order_id", sa.BigInteger(), nullable=True),
        sa.Column("symbol", sa.Text(), nullable=True),
        sa.Column("exec_amount", NUMERIC, nullable=True),
        sa.Column("exec_price", NUMERIC, nullable=True),
        sa.Column("amount", NUMERIC, nullable=True),
        sa.Column("attribution", sa.Text(), nullable=False),
        sa.Column("event_id", sa.BigInteger(), nullable=True),
        sa.Column("ledger_id", sa.BigInteger(), nullable=True),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("trade_event_id", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("account", "trade_id", "wallet_type", "currency", "part"),
    )
    op.create_table(
        "reconciliation_ledgers",
        sa.Column("account", sa.Text(), nullable=False),
        sa.Column("reconciliation_id", sa.BigInteger(), nullable=False),
        sa.Column("ledger_id", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("reconciliation_id", "ledger_id"),
    )
    _gaps_view(COVERED)


def downgrade() -> None:
    _gaps_view(OLD_COVERED)
    op.drop_table("reconciliation_ledgers")
    op.drop_table("fill_effects")
    for table in ("trades", "funding_trades"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("confirmed_by")
    with op.batch_alter_table("ledgers") as batch:
        batch.drop_column("category")
