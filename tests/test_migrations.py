from __future__ import annotations

from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from recorder.config import DatabaseConfig
from recorder.store import migrate, schema
from recorder.store.engine import create_engine

# Every table and column that ../shared/contract.md names.
CONTRACT: dict[str, set[str]] = {
    "sessions": {
        "id",
        "account",
        "started_at",
        "connected_at",
        "authenticated_at",
        "ended_at",
        "user_id",
        "auth_status",
        "auth_code",
        "end_reason",
    },
    "events": {
        "id",
        "account",
        "session_id",
        "received_at",
        "chan_id",
        "kind",
        "seq",
        "auth_seq",
        "frame",
        "hash",
    },
    "orders": {
        "account",
        "event_id",
        "id",
        "gid",
        "cid",
        "symbol",
        "mts_create",
        "mts_update",
        "amount",
        "amount_orig",
        "order_type",
        "type_prev",
        "flags",
        "order_status",
        "price",
        "price_avg",
        "price_trailing",
        "price_aux_limit",
        "hidden",
        "routing",
        "meta",
        "is_open",
    },
    "positions": {
        "account",
        "event_id",
        "symbol",
        "status",
        "amount",
        "base_price",
        "margin_funding",
        "margin_funding_type",
        "pl",
        "pl_perc",
        "price_liq",
        "leverage",
        "position_id",
        "mts_create",
        "mts_update",
        "type",
        "collateral",
        "collateral_min",
        "meta",
    },
    "wallets": {
        "account",
        "event_id",
        "wallet_type",
        "currency",
        "balance",
        "unsettled_interest",
        "available_balance",
        "last_change",
        "trade_details",
    },
    "trades": {
        "account",
        "event_id",
        "id",
        "symbol",
        "mts_create",
        "order_id",
        "exec_amount",
        "exec_price",
        "order_type",
        "order_price",
        "maker",
        "fee",
        "fee_currency",
        "cid",
    },
    "funding_offers": {"account", "event_id", "id", "symbol", "amount", "rate", "period"},
    "funding_credits": {"account", "event_id", "id", "symbol", "amount", "rate", "position_pair"},
    "funding_loans": {"account", "event_id", "id", "symbol", "amount", "rate"},
    "balance_info": {"account", "event_id", "aum", "aum_net"},
    "margin_info": {"account", "event_id", "user_pl", "margin_balance", "tradable_balance"},
    "notifications": {"account", "event_id", "mts", "type", "status", "text"},
    "projector_checkpoints": {"projector", "account", "event_id"},
    "reconciliations": {
        "event_id",
        "account",
        "projection",
        "key",
        "problem",
        "folded",
        "snapshot",
    },
}


def _columns(engine: sa.Engine) -> dict[str, set[str]]:
    insp = sa.inspect(engine)
    return {t: {c["name"] for c in insp.get_columns(t)} for t in insp.get_table_names()}


def test_upgrade_downgrade_upgrade(db_url: str) -> None:
    engine = create_engine(DatabaseConfig(url=db_url))
    try:
        migrate.upgrade(engine)
        assert migrate.current(engine) == migrate.head()
        cols = _columns(engine)
        for table, wanted in CONTRACT.items():
            assert table in cols, f"missing table {table}"
            assert wanted <= cols[table], f"{table} lacks {wanted - cols[table]}"

        migrate.downgrade(engine, "base")
        assert migrate.current(engine) is None
        leftover = set(_columns(engine)) - {"alembic_version"}
        assert leftover == set()

        migrate.upgrade(engine)
        assert set(CONTRACT) <= set(_columns(engine))
    finally:
        engine.dispose()


def test_migrated_schema_matches_application_metadata(engine: sa.Engine) -> None:
    """recorder/store/schema.py and the Alembic revisions describe the same database."""
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(ctx, schema.metadata)
    assert diff == []


def _one_event(engine: sa.Engine) -> None:
    now = datetime.now(UTC)
    with engine.begin() as conn:
        sid = conn.execute(
            schema.sessions.insert().values(account="a", started_at=now)
        ).inserted_primary_key[0]
        conn.execute(
            schema.events.insert().values(
                account="a", session_id=sid, received_at=now, kind="hb", frame='[0,"hb"]', hash="0"
            )
        )


@pytest.mark.parametrize(
    "statement",
    ["UPDATE events SET frame = 'tampered'", "DELETE FROM events"],
)
def test_events_are_append_only(engine: sa.Engine, statement: str) -> None:
    _one_event(engine)
    with pytest.raises(sa.exc.DatabaseError, match="append-only"), engine.begin() as conn:
        conn.execute(sa.text(statement))
    with engine.connect() as conn:
        frames = conn.execute(sa.text("SELECT frame FROM events")).scalars().all()
    assert frames == ['[0,"hb"]']


def test_sqlite_engine_uses_wal_and_foreign_keys(tmp_path) -> None:  # type: ignore[no-untyped-def]
    engine = create_engine(DatabaseConfig(url=f"sqlite:///{tmp_path / 'x.db'}"))
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 1000
    engine.dispose()


def test_exact_decimals_round_trip(engine: sa.Engine) -> None:
    from decimal import Decimal

    value = Decimal("512316.64413271693")
    with engine.begin() as conn:
        conn.execute(
            schema.wallets.insert().values(
                account="a", wallet_type="exchange", currency="USD", balance=value, event_id=1
            )
        )
    with engine.connect() as conn:
        got = conn.execute(sa.select(schema.wallets.c.balance)).scalar_one()
    assert got == value


def test_plain_alembic_command_from_the_repository_root(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "BFX_RECORDER_DATABASE_URL": f"sqlite:///{tmp_path / 'a.db'}"}
    alembic = [sys.executable, "-m", "alembic"]
    up = subprocess.run(
        [*alembic, "upgrade", "head"], cwd=root, env=env, capture_output=True, text=True, timeout=60
    )
    assert up.returncode == 0, up.stderr
    cur = subprocess.run(
        [*alembic, "current"], cwd=root, env=env, capture_output=True, text=True, timeout=60
    )
    assert migrate.head() in cur.stdout


def test_the_light_revision_check_knows_the_head(engine: sa.Engine) -> None:
    """Read-only commands check the schema without Alembic: the constant must follow."""
    from recorder.store import revision

    assert migrate.head() == revision.HEAD
    assert revision.current(engine) == migrate.current(engine) == migrate.head()
