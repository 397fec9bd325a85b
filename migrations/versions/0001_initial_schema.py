"""Initial schema: session and event log, projections, checkpoints, reconciliations, nonces.

The column types are spelled out here (not imported from recorder.store) so that this revision
stays frozen when the application's types evolve; tests/test_migrations.py checks that the
migrated schema matches recorder/store/schema.py.

Revision ID: 0001
Revises:
Create Date: 2026-11-27 21:15:36.715640
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen spellings of recorder.store.types / recorder.store.schema.BigId.
NUMERIC = sa.Numeric()
TSTZ = sa.DateTime(timezone=True)
JSONDOC = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
BIGID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

APPEND_ONLY_MESSAGE = "events is append-only: UPDATE and DELETE are refused"


def _append_only_triggers() -> None:
    """Make the database itself refuse UPDATE and DELETE on events."""
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        for action in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER events_no_{action.lower()} BEFORE {action} ON events "
                f"BEGIN SELECT RAISE(ABORT, '{APPEND_ONLY_MESSAGE}'); END"
            )
    else:
        op.execute(
            "CREATE FUNCTION events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ "
            f"BEGIN RAISE EXCEPTION '{APPEND_ONLY_MESSAGE}'; END $$"
        )
        op.execute(
            "CREATE TRIGGER events_no_update_delete BEFORE UPDATE OR DELETE ON events "
            "FOR EACH ROW EXECUTE FUNCTION events_append_only()"
        )
        op.execute(
            "CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events "
            "FOR EACH STATEMENT EXECUTE FUNCTION events_append_only()"
        )


def _drop_append_only_triggers() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        op.execute("DROP TRIGGER IF EXISTS events_no_update")
        op.execute("DROP TRIGGER IF EXISTS events_no_delete")
    else:
        op.execute("DROP TRIGGER IF EXISTS events_no_update_delete ON events")
        op.execute("DROP TRIGGER IF EXISTS events_no_truncate ON events")
        op.execute("DROP FUNCTION IF EXISTS events_append_only()")


def upgrade() -> None:
    op.create_table(
        "api_nonces",
        sa.Column("key_hash", sa.Text(), nullable=False),
        sa.Column("last_nonce", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", TSTZ, nullable=False),
        sa.PrimaryKeyConstraint("key_hash"),
    )
    op.create_table(
        "balance_info",
        sa.Column("account", sa.Text(), nullable=False),
        sa.Column("aum", NUMERIC, nullable=True),
        sa.Column("aum_net", NUMERIC, nullable=True),
        sa.Column("event_id", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("account"),
    )
    op.create_table(
        "funding_credits",
        sa.Column("account", sa.Text(), nullable=False),
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("symbol", sa.Text(), nullable=True),
        sa.Column("side", sa.BigInteger(), nullable=True),
        sa.Column("mts_create", TSTZ, nullable=True),
        sa.Column("mts_update", TSTZ, nullable=True),
        sa.Column("amount", NUMERIC, nullable=True),
        sa.Column("flags", sa.BigInteger(), nullable=True),
        sa.Column("status", sa.Text(), nullable=True),
        sa.Column("rate_type", sa.Text(), nullable=True),
        sa.Column("rate", NUMERIC, nullable=True),
        sa.Column("period", sa.BigInteger(), nullable=True),
        sa.Column("mts_opening", TSTZ, nullable=True),
        sa.Column("mts_last_payout", TSTZ, nullable=True),
        sa.Column("notify", sa.BigInteger(), nullable=True),
        sa.Column("hidden", sa.BigInteger(), nullable=True),
        sa.Column("renew", sa.BigInteger(), nullable=True),
        sa.Column("rate_real", NUMERIC, nullable=True),
        sa.Column("no_close", sa.BigInteger(), nullable=True),
        sa.Column("position_pair", sa.Text(), nullable=True),
        sa.Column("is_open", sa.Boolean(), nullable=False),
        sa.Column("event_id", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("account", "id"),
    )
    op.create_table(
        "funding_info",
        sa.Column("account", sa.Text(), nullable=False),
        sa.Column("symbol", sa.Text(), nullable=False),
        sa.Column("yield_loan", NUMERIC, nullable=True),
        sa.Column("yield_lend", NUMERIC, nullable=True),
        sa.Column("duration_loan", NUMERIC, nullable=True),
        sa.Column("duration_lend", NUMERIC, nullable=True),
        sa.Column("event_id", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("account", "symbol"),
    )
    op.create_table(
        "funding_loans",
        sa.Column("account", sa.Text(), nullable=False),
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("symbol", sa.Text(), nullable=True),
        sa.Column("side", sa.BigInteger(), nullable=True),
        sa.Column("mts_create", TSTZ, nullable=True),
        sa.Column("mts_update", TSTZ, nullable=True),
        sa.Column("amount", NUMERIC, nullable=True),
        sa.Column("flags", sa.BigInteger(), nullable=True),
        sa.Column("status", sa.Text(), nullable=True),
        sa.Column("rate_type", sa.Text(), nullable=True),
        sa.Column("rate", NUMERIC, nullable=True),
        sa.Column("period", sa.BigInteger(), nullable=True),
        sa.Column("mts_opening", TSTZ, nullable=True),
        sa.Column("mts_last_payout", TSTZ, nullable=True),
        sa.Column("notify", sa.BigInteger(), nullable=True),
        sa.Column("hidden", sa.BigInteger(), nullable=True),
        sa.Column("renew", sa.BigInteger(), nullable=True),
        sa.Column("rate_real", NUMERIC, nullable=True),
        sa.Column("no_close", sa.BigInteger(), nullable=True),
        sa.Column("is_open", sa.Boolean(), nullable=False),
        sa.Column("event_id", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("account", "id"),
    )
    op.create_table(
        "funding_offers",
        sa.Column("account", sa.Text(), nullable=False),
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("symbol", sa.Text(), nullable=True),
        sa.Column("mts_create", TSTZ, nullable=True),
        sa.Column("mts_update", TSTZ, nullable=True),
        sa.Column("amount", NUMERIC, nullable=True),
        sa.Column("amount_orig", NUMERIC, nullable=True),
        sa.Column("offer_type", sa.Text(), nullable=True),
        sa.Column("flags", sa.BigInteger(), nullable=True),
        sa.Column("offer_status", sa.Text(), nullable=True),
        sa.Column("rate", NUMERIC, nullable=True),
        sa.Column("period", sa.BigInteger(), nullable=True),
        sa.Column("notify", sa.BigInteger(), nullable=True),
        sa.Column("hidden", sa.BigInteger(), nullable=True),
        sa.Column("renew", sa.BigInteger(), nullable=True),
        sa.Column("rate_real", NUMERIC, nullable=True),
        sa.Column("is_open", sa.Boolean(), nullable=False),
        sa.Column("event_id", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("account", "id"),
    )
    op.create_table(
        "funding_trades",
        sa.Column("account", sa.Text(), nullable=False),
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("symbol", sa.Text(), nullable=True),
        sa.Column("mts_create", TSTZ, nullable=True),
        sa.Column("offer_id", sa.BigInteger(), nullable=True),
        sa.Column("amount", NUMERIC, nullable=True),
        sa.Column("rate", NUMERIC, nullable=True),
        sa.Column("period", sa.BigInteger(), nullable=True),
        sa.Column("maker", sa.BigInteger(), nullable=True),
        sa.Column("event_id", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("account", "id"),
    )
    op.create_table(
        "margin_info",
        sa.Column("account", sa.Text(), nullable=False),
        sa.Column("margin_key", sa.Text(), nullable=False),
        sa.Column("type", sa.Text(), nullable=False),
        sa.Column("symbol", sa.Text(), nullable=True),
        sa.Column("user_pl", NUMERIC, nullable=True),
        sa.Column("user_swaps", NUMERIC, nullable=True),
        sa.Column("margin_balance", NUMERIC, nullable=True),
        sa.Column("margin_net", NUMERIC, nullable=True),
        sa.Column("margin_min", NUMERIC, nullable=True),
        sa.Column("tradable_balance", NUMERIC, nullable=True),
        sa.Column("gross_balance", NUMERIC, nullable=True),
        sa.Column("buy", NUMERIC, nullable=True),
        sa.Column("sell", NUMERIC, nullable=True),
        sa.Column("event_id", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("account", "margin_key"),
    )
    op.create_table(
        "notifications",
        sa.Column("account", sa.Text(), nullable=False),
        sa.Column("event_id", sa.BigInteger(), nullable=False),
        sa.Column("mts", TSTZ, nullable=True),
        sa.Column("type", sa.Text(), nullable=True),
        sa.Column("message_id", sa.BigInteger(), nullable=True),
        sa.Column("data", JSONDOC, nullable=True),
        sa.Column("code", sa.BigInteger(), nullable=True),
        sa.Column("status", sa.Text(), nullable=True),
        sa.Column("text", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("account", "event_id"),
    )
    op.create_table(
        "orders",
        sa.Column("account", sa.Text(), nullable=False),
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("gid", sa.BigInteger(), nullable=True),
        sa.Column("cid", sa.BigInteger(), nullable=True),
        sa.Column("symbol", sa.Text(), nullable=True),
        sa.Column("mts_create", TSTZ, nullable=True),
        sa.Column("mts_update", TSTZ, nullable=True),
        sa.Column("amount", NUMERIC, nullable=True),
        sa.Column("amount_orig", NUMERIC, nullable=True),
        sa.Column("order_type", sa.Text(), nullable=True),
        sa.Column("type_prev", sa.Text(), nullable=True),
        sa.Column("mts_tif", TSTZ, nullable=True),
        sa.Column("flags", sa.BigInteger(), nullable=True),
        sa.Column("order_status", sa.Text(), nullable=True),
        sa.Column("price", NUMERIC, nullable=True),
        sa.Column("price_avg", NUMERIC, nullable=True),
        sa.Column("price_trailing", NUMERIC, nullable=True),
        sa.Column("price_aux_limit", NUMERIC, nullable=True),
        sa.Column("notify", sa.BigInteger(), nullable=True),
        sa.Column("hidden", sa.BigInteger(), nullable=True),
        sa.Column("placed_id", sa.BigInteger(), nullable=True),
        sa.Column("routing", sa.Text(), nullable=True),
        sa.Column("meta", JSONDOC, nullable=True),
        sa.Column("is_open", sa.Boolean(), nullable=False),
        sa.Column("event_id", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("account", "id"),
    )
    op.create_table(
        "positions",
        sa.Column("account", sa.Text(), nullable=False),
        sa.Column("symbol", sa.Text(), nullable=True),
        sa.Column("status", sa.Text(), nullable=True),
        sa.Column("amount", NUMERIC, nullable=True),
        sa.Column("base_price", NUMERIC, nullable=True),
        sa.Column("margin_funding", NUMERIC, nullable=True),
        sa.Column("margin_funding_type", sa.BigInteger(), nullable=True),
        sa.Column("pl", NUMERIC, nullable=True),
        sa.Column("pl_perc", NUMERIC, nullable=True),
        sa.Column("price_liq", NUMERIC, nullable=True),
        sa.Column("leverage", NUMERIC, nullable=True),
        sa.Column("position_id", sa.BigInteger(), nullable=True),
        sa.Column("mts_create", TSTZ, nullable=True),
        sa.Column("mts_update", TSTZ, nullable=True),
        sa.Column("type", sa.BigInteger(), nullable=True),
        sa.Column("collateral", NUMERIC, nullable=True),
        sa.Column("collateral_min", NUMERIC, nullable=True),
        sa.Column("meta", JSONDOC, nullable=True),
        sa.Column("position_key", sa.Text(), nullable=False),
        sa.Column("event_id", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("account", "position_key"),
    )
    op.create_table(
        "projector_checkpoints",
        sa.Column("projector", sa.Text(), nullable=False),
        sa.Column("account", sa.Text(), nullable=False),
        sa.Column("event_id", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", TSTZ, nullable=False),
        sa.PrimaryKeyConstraint("projector", "account"),
    )
    op.create_table(
        "reconciliations",
        sa.Column("id", BIGID, autoincrement=True, nullable=False),
        sa.Column("event_id", sa.BigInteger(), nullable=False),
        sa.Column("account", sa.Text(), nullable=False),
        sa.Column("projection", sa.Text(), nullable=False),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("problem", sa.Text(), nullable=False),
        sa.Column("folded", JSONDOC, nullable=True),
        sa.Column("snapshot", JSONDOC, nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("reconciliations", schema=None) as batch_op:
        batch_op.create_index(
            "ix_reconciliations_account_event", ["account", "event_id"], unique=False
        )

    op.create_table(
        "sessions",
        sa.Column("id", BIGID, autoincrement=True, nullable=False),
        sa.Column("account", sa.Text(), nullable=False),
        sa.Column("started_at", TSTZ, nullable=False),
        sa.Column("connected_at", TSTZ, nullable=True),
        sa.Column("authenticated_at", TSTZ, nullable=True),
        sa.Column("ended_at", TSTZ, nullable=True),
        sa.Column("user_id", sa.BigInteger(), nullable=True),
        sa.Column("auth_status", sa.Text(), nullable=True),
        sa.Column("auth_code", sa.BigInteger(), nullable=True),
        sa.Column("end_reason", sa.Text(), nullable=True),
        sa.Column("url", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.create_index(
            "ix_sessions_account_started", ["account", "started_at"], unique=False
        )

    op.create_table(
        "trades",
        sa.Column("account", sa.Text(), nullable=False),
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("symbol", sa.Text(), nullable=True),
        sa.Column("mts_create", TSTZ, nullable=True),
        sa.Column("order_id", sa.BigInteger(), nullable=True),
        sa.Column("exec_amount", NUMERIC, nullable=True),
        sa.Column("exec_price", NUMERIC, nullable=True),
        sa.Column("order_type", sa.Text(), nullable=True),
        sa.Column("order_price", NUMERIC, nullable=True),
        sa.Column("maker", sa.BigInteger(), nullable=True),
        sa.Column("fee", NUMERIC, nullable=True),
        sa.Column("fee_currency", sa.Text(), nullable=True),
        sa.Column("cid", sa.BigInteger(), nullable=True),
        sa.Column("event_id", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("account", "id"),
    )
    op.create_table(
        "wallets",
        sa.Column("account", sa.Text(), nullable=False),
        sa.Column("wallet_type", sa.Text(), nullable=False),
        sa.Column("currency", sa.Text(), nullable=False),
        sa.Column("balance", NUMERIC, nullable=True),
        sa.Column("unsettled_interest", NUMERIC, nullable=True),
        sa.Column("available_balance", NUMERIC, nullable=True),
        sa.Column("last_change", sa.Text(), nullable=True),
        sa.Column("trade_details", JSONDOC, nullable=True),
        sa.Column("event_id", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("account", "wallet_type", "currency"),
    )
    op.create_table(
        "events",
        sa.Column("id", BIGID, autoincrement=True, nullable=False),
        sa.Column("account", sa.Text(), nullable=False),
        sa.Column("session_id", sa.BigInteger(), nullable=True),
        sa.Column("received_at", TSTZ, nullable=False),
        sa.Column("chan_id", sa.BigInteger(), nullable=True),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=True),
        sa.Column("auth_seq", sa.BigInteger(), nullable=True),
        sa.Column("frame", sa.Text(), nullable=False),
        sa.Column("hash", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["sessions.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.create_index("ix_events_account_id", ["account", "id"], unique=False)
        batch_op.create_index(
            "ix_events_account_received", ["account", "received_at"], unique=False
        )
        batch_op.create_index("ix_events_session", ["session_id"], unique=False)
    _append_only_triggers()


def downgrade() -> None:
    _drop_append_only_triggers()
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_index("ix_events_session")
        batch_op.drop_index("ix_events_account_received")
        batch_op.drop_index("ix_events_account_id")

    op.drop_table("events")
    op.drop_table("wallets")
    op.drop_table("trades")
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.drop_index("ix_sessions_account_started")

    op.drop_table("sessions")
    with op.batch_alter_table("reconciliations", schema=None) as batch_op:
        batch_op.drop_index("ix_reconciliations_account_event")

    op.drop_table("reconciliations")
    op.drop_table("projector_checkpoints")
    op.drop_table("positions")
    op.drop_table("orders")
    op.drop_table("notifications")
    op.drop_table("margin_info")
    op.drop_table("funding_trades")
    op.drop_table("funding_offers")
    op.drop_table("funding_loans")
    op.drop_table("funding_info")
    op.drop_table("funding_credits")
    op.drop_table("balance_info")
    op.drop_table("api_nonces")
