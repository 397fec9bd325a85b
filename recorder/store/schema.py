"""The database schema as SQLAlchemy Core tables.

Alembic owns the schema (``migrations/``); this module describes the same tables for the code
that reads and writes them. ``tests/test_migrations.py`` asserts that the migrated database and
this metadata do not differ, so the two cannot drift apart.

Projection tables take their value columns from :mod:`recorder.protocol.layouts`, so a column
is named exactly as the Bitfinex field it holds.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from recorder.protocol import layouts
from recorder.protocol.layouts import Layout
from recorder.store.types import ExactDecimal, JSONDoc, UTCDateTime

metadata = sa.MetaData()

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
"""Auto-incrementing 64-bit ids; SQLite only auto-increments ``INTEGER PRIMARY KEY``."""


def _column_type(kind: str) -> Any:
    return {
        "int": sa.BigInteger(),
        "dec": ExactDecimal(),
        "text": sa.Text(),
        "mts": UTCDateTime(),
        "json": JSONDoc,
    }[kind]


def _value_columns(layout: Layout, *, skip: tuple[str, ...] = ()) -> list[sa.Column]:
    return [
        sa.Column(f.name, _column_type(f.kind), nullable=True)
        for f in layout.fields
        if f.name not in skip
    ]


sessions = sa.Table(
    "sessions",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("account", sa.Text, nullable=False),
    sa.Column("started_at", UTCDateTime, nullable=False),
    sa.Column("connected_at", UTCDateTime),
    sa.Column("authenticated_at", UTCDateTime),
    sa.Column("ended_at", UTCDateTime),
    sa.Column("user_id", sa.BigInteger),
    sa.Column("auth_status", sa.Text),
    sa.Column("auth_code", sa.BigInteger),
    sa.Column("end_reason", sa.Text),
    sa.Column("url", sa.Text),
    sa.Index("ix_sessions_account_started", "account", "started_at"),
)

events = sa.Table(
    "events",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("account", sa.Text, nullable=False),
    sa.Column("session_id", sa.BigInteger, sa.ForeignKey("sessions.id"), nullable=True),
    sa.Column("received_at", UTCDateTime, nullable=False),
    sa.Column("chan_id", sa.BigInteger),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("seq", sa.BigInteger),
    sa.Column("auth_seq", sa.BigInteger),
    sa.Column("frame", sa.Text, nullable=False),
    sa.Column("hash", sa.Text, nullable=False),
    sa.Index("ix_events_account_id", "account", "id"),
    sa.Index("ix_events_account_received", "account", "received_at"),
    sa.Index("ix_events_session", "session_id"),
)

api_nonces = sa.Table(
    "api_nonces",
    metadata,
    # SHA-256 of the API key: the key itself is never stored.
    sa.Column("key_hash", sa.Text, primary_key=True),
    sa.Column("last_nonce", sa.BigInteger, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
)

projector_checkpoints = sa.Table(
    "projector_checkpoints",
    metadata,
    sa.Column("projector", sa.Text, primary_key=True),
    sa.Column("account", sa.Text, primary_key=True),
    sa.Column("event_id", sa.BigInteger, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Column("stale", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("synced", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("skipped", sa.BigInteger, nullable=False, server_default="0"),
)

reconciliations = sa.Table(
    "reconciliations",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("event_id", sa.BigInteger, nullable=False),
    sa.Column("account", sa.Text, nullable=False),
    sa.Column("projection", sa.Text, nullable=False),
    sa.Column("key", sa.Text, nullable=False),
    sa.Column("problem", sa.Text, nullable=False),
    sa.Column("folded", JSONDoc),
    sa.Column("snapshot", JSONDoc),
    # The REST answer (events.id) that accounts for the difference; NULL while unexplained.
    sa.Column("explained_by", sa.BigInteger),
    sa.Index("ix_reconciliations_account_event", "account", "event_id"),
)


def _projection(
    name: str,
    layout: Layout,
    key: tuple[str, ...],
    *extra: sa.Column,
    skip: tuple[str, ...] = (),
) -> sa.Table:
    cols = _value_columns(layout, skip=skip)
    for col in cols:
        if col.name in key:
            col.nullable = False
            col.primary_key = True
    return sa.Table(
        name,
        metadata,
        sa.Column("account", sa.Text, primary_key=True),
        *cols,
        *extra,
        sa.Column("event_id", sa.BigInteger, nullable=False),
    )


def _is_open() -> sa.Column:
    return sa.Column("is_open", sa.Boolean, nullable=False)


def _confirmed_by() -> sa.Column:
    """The REST answer that repeated (or completed) what the socket had recorded."""
    return sa.Column("confirmed_by", sa.BigInteger)


orders = _projection("orders", layouts.ORDER, ("id",), _is_open(), _confirmed_by())
positions = _projection(
    "positions",
    layouts.POSITION,
    (),
    # position_id when the frame carries one, else "sym:<symbol>" (protocol.md §6.2, §8 item 7)
    sa.Column("position_key", sa.Text, primary_key=True),
    _confirmed_by(),
)
wallets = _projection("wallets", layouts.WALLET, ("wallet_type", "currency"))
trades = _projection("trades", layouts.TRADE, ("id",), _confirmed_by())
funding_offers = _projection(
    "funding_offers", layouts.FUNDING_OFFER, ("id",), _is_open(), _confirmed_by()
)
funding_credits = _projection(
    "funding_credits", layouts.FUNDING_CREDIT, ("id",), _is_open(), _confirmed_by()
)
funding_loans = _projection(
    "funding_loans", layouts.FUNDING_LOAN, ("id",), _is_open(), _confirmed_by()
)
funding_trades = _projection("funding_trades", layouts.FUNDING_TRADE, ("id",), _confirmed_by())
balance_info = _projection("balance_info", layouts.BALANCE_INFO, ())
margin_info = sa.Table(
    "margin_info",
    metadata,
    sa.Column("account", sa.Text, primary_key=True),
    # 'base' for the account-wide variant, the symbol for 'sym' rows
    sa.Column("margin_key", sa.Text, primary_key=True),
    sa.Column("type", sa.Text, nullable=False),
    sa.Column("symbol", sa.Text),
    *_value_columns(layouts.MARGIN_INFO_BASE),
    *_value_columns(layouts.MARGIN_INFO_SYM),
    sa.Column("event_id", sa.BigInteger, nullable=False),
)
funding_info = sa.Table(
    "funding_info",
    metadata,
    sa.Column("account", sa.Text, primary_key=True),
    sa.Column("symbol", sa.Text, primary_key=True),
    *_value_columns(layouts.FUNDING_INFO),
    sa.Column("event_id", sa.BigInteger, nullable=False),
)
notifications = sa.Table(
    "notifications",
    metadata,
    sa.Column("account", sa.Text, primary_key=True),
    sa.Column("event_id", sa.BigInteger, primary_key=True),
    *_value_columns(layouts.NOTIFICATION),
)

ledgers = sa.Table(
    "ledgers",
    metadata,
    sa.Column("account", sa.Text, primary_key=True),
    sa.Column("id", sa.BigInteger, primary_key=True),
    *_value_columns(layouts.LEDGER, skip=("id",)),
    sa.Column("event_id", sa.BigInteger, nullable=False),
    # Bitfinex's category code derived from the description (audit.md §3); NULL: unknown text.
    sa.Column("category", sa.BigInteger),
)
# Deposits and withdrawals (``rest.movements-hist``, rest.md §3.7): no WS record exists; the
# latest answer's row is kept (a movement's status moves on: PENDING -> COMPLETED).
movements = _projection("movements", layouts.MOVEMENT, ("id",), _confirmed_by())
# One row per balance effect of a fill (audit.md §2): which frame (``event_id``) and ledger
# row (``ledger_id``) carry it, and how surely (``attribution``: exact, inferred, missing).
fill_effects = sa.Table(
    "fill_effects",
    metadata,
    sa.Column("account", sa.Text, primary_key=True),
    sa.Column("trade_id", sa.BigInteger, primary_key=True),
    sa.Column("wallet_type", sa.Text, primary_key=True),
    sa.Column("currency", sa.Text, primary_key=True),
    sa.Column("part", sa.Text, primary_key=True),  # 'base', 'quote', 'fee'
    sa.Column("order_id", sa.BigInteger),
    sa.Column("symbol", sa.Text),
    sa.Column("exec_amount", ExactDecimal),  # the fill, as the trade row gives it
    sa.Column("exec_price", ExactDecimal),
    # Signed: the balance change itself where a frame or ledger row carries it, else what
    # the trade implies (base +A, quote -A*P, fee F).
    sa.Column("amount", ExactDecimal),
    sa.Column("attribution", sa.Text, nullable=False),
    sa.Column("event_id", sa.BigInteger),  # the frame or REST answer carrying it
    sa.Column("ledger_id", sa.BigInteger),
    sa.Column("source", sa.Text, nullable=False),  # 'live' (tu) or 'backfill' (REST)
    sa.Column("trade_event_id", sa.BigInteger, nullable=False),  # the tu or REST answer
)
# The ledger rows that account exactly for a wallet reconciliation's difference.
reconciliation_ledgers = sa.Table(
    "reconciliation_ledgers",
    metadata,
    sa.Column("account", sa.Text, nullable=False),
    sa.Column("reconciliation_id", sa.BigInteger, primary_key=True),
    sa.Column("ledger_id", sa.BigInteger, primary_key=True),
)
wallet_history = sa.Table(
    "wallet_history",
    metadata,
    sa.Column("account", sa.Text, primary_key=True),
    sa.Column("wallet_type", sa.Text, primary_key=True),
    sa.Column("currency", sa.Text, primary_key=True),
    # 'ws' or 'wu' (ref: the event id) or 'ledger' (ref: the ledger entry id)
    sa.Column("source", sa.Text, primary_key=True),
    sa.Column("ref", sa.BigInteger, primary_key=True),
    sa.Column("at", UTCDateTime),
    sa.Column("balance", ExactDecimal),
    sa.Column("unsettled_interest", ExactDecimal),
    sa.Column("available_balance", ExactDecimal),
    sa.Column("description", sa.Text),
    sa.Column("event_id", sa.BigInteger, nullable=False),
    sa.Index("ix_wallet_history_at", "account", "wallet_type", "currency", "at"),
)
backfills = sa.Table(
    "backfills",
    metadata,
    sa.Column("account", sa.Text, primary_key=True),
    # the recorder.backfill-start marker's event id
    sa.Column("id", sa.BigInteger, primary_key=True),
    sa.Column("session_id", sa.BigInteger),
    sa.Column("reason", sa.Text),
    sa.Column("window_from", UTCDateTime),
    sa.Column("window_to", UTCDateTime),
    sa.Column("complete", sa.Boolean),  # NULL while running
    sa.Column("requests", sa.BigInteger),
    sa.Column("rows", sa.BigInteger),
    sa.Column("event_id", sa.BigInteger, nullable=False),
)

state_snapshots = sa.Table(
    "state_snapshots",
    metadata,
    sa.Column("account", sa.Text, primary_key=True),
    # The folded state right after this event (open orders, positions, wallets, fold flags).
    sa.Column("event_id", sa.BigInteger, primary_key=True),
    sa.Column("state", JSONDoc, nullable=False),
)

fold_findings = sa.Table(
    "fold_findings",
    metadata,
    # One row per (account, projection, event, key): what each event could not write.
    sa.Column("account", sa.Text, primary_key=True),
    sa.Column("projection", sa.Text, primary_key=True),
    sa.Column("event_id", sa.BigInteger, primary_key=True),  # 0: no event id in the row
    sa.Column("key", sa.Text, primary_key=True),  # the row's key, as JSON
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("row", sa.Text, nullable=False),  # the row as JSON (its values as text)
)

PROJECTION_TABLES: dict[str, sa.Table] = {
    t.name: t
    for t in (
        orders,
        positions,
        wallets,
        trades,
        funding_offers,
        funding_credits,
        funding_loans,
        funding_trades,
        balance_info,
        margin_info,
        funding_info,
        notifications,
        ledgers,
        movements,
        fill_effects,
        wallet_history,
        backfills,
        state_snapshots,
    )
}
