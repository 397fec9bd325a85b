"""The prepared driver statements store exactly what SQLAlchemy's own statements store.

Every projection table gets the same rows written both ways (under two accounts); the rows
read back must be equal, value for value and type for type. Then the conflict rules: an
upsert overwrites, ``keep_stored`` keeps a stored value where the new row has NULL, an
insert-if-absent leaves the stored row alone.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from recorder.store.prepared import statements
from recorder.store.schema import PROJECTION_TABLES, projector_checkpoints
from recorder.store.types import ExactDecimal, UTCDateTime


def _value(col: sa.Column, rng: random.Random, i: int) -> Any:
    if col.primary_key and col.name != "account":
        return i if isinstance(col.type, sa.BigInteger | sa.Integer) else f"k{i}"
    if rng.random() < 0.2 and col.nullable:
        return None
    t = col.type
    if isinstance(t, ExactDecimal):
        return rng.choice(
            [Decimal("0.1"), Decimal("-12345678.123456789012345678"), Decimal("7"), Decimal("1E-8")]
        )
    if isinstance(t, UTCDateTime):
        zone = UTC if i % 2 else timezone(timedelta(hours=2))  # converted to UTC either way
        return datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=zone) + timedelta(seconds=i)
    if isinstance(t, sa.Boolean):
        return rng.random() < 0.5
    if isinstance(t, sa.BigInteger | sa.Integer):
        return rng.randrange(-(2**40), 2**40)
    if isinstance(t, sa.JSON):
        return {"n": i, "s": "naïve \u20ac", "list": [1, "2", None], "x": 0.5}
    return rng.choice(["EXCHANGE LIMIT", "tBTCUSD", "ü", "it's"])


def _rows(table: sa.Table, n: int) -> list[dict[str, Any]]:
    rng = random.Random(table.name)
    return [{c.name: _value(c, rng, i) for c in table.c if c.name != "account"} for i in range(n)]


def _read(conn: sa.Connection, table: sa.Table, account: str) -> list[dict[str, Any]]:
    pk = [c for c in table.primary_key.columns if c.name != "account"]
    found = conn.execute(sa.select(table).where(table.c.account == account).order_by(*pk))
    return [{k: v for k, v in r.items() if k != "account"} for r in found.mappings()]


def _plain_insert(conn: sa.Connection, table: sa.Table) -> Any:
    return (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(table)


@pytest.mark.parametrize("name", sorted(PROJECTION_TABLES))
def test_prepared_rows_equal_sqlalchemy_rows(engine: sa.Engine, name: str) -> None:
    table = PROJECTION_TABLES[name]
    n = 12 if len(table.primary_key.columns) > 1 else 1  # balance_info: one row an account
    rows = _rows(table, n)
    with engine.begin() as conn:
        statements(conn).upsert(table).execute(conn, rows, "fast")
        conn.execute(table.insert(), [r | {"account": "plain"} for r in rows])
    with engine.connect() as conn:
        fast, plain = _read(conn, table, "fast"), _read(conn, table, "plain")
    assert len(fast) == n
    assert fast == plain
    assert [{k: type(v) for k, v in r.items()} for r in fast] == [
        {k: type(v) for k, v in r.items()} for r in plain
    ]


def test_upsert_overwrites_and_keep_stored_keeps(engine: sa.Engine) -> None:
    trades = PROJECTION_TABLES["trades"]
    te = {"id": 1, "symbol": "tBTCUSD", "exec_amount": Decimal("0.5"), "fee": None, "event_id": 1}
    tu = {"id": 1, "symbol": None, "exec_amount": None, "fee": Decimal("-0.001"), "event_id": 2}
    with engine.begin() as conn:
        prepared = statements(conn)
        prepared.upsert(trades, keep_stored=True).execute(conn, [te], "a")
        prepared.upsert(trades, keep_stored=True).execute(conn, [tu], "a")
        prepared.upsert(trades).execute(conn, [te], "b")
        prepared.upsert(trades).execute(conn, [tu], "b")
    with engine.connect() as conn:
        (a,) = _read(conn, trades, "a")
        (b,) = _read(conn, trades, "b")
    assert (a["symbol"], a["exec_amount"], a["fee"], a["event_id"]) == (
        "tBTCUSD",
        Decimal("0.5"),
        Decimal("-0.001"),
        2,
    )
    assert (b["symbol"], b["exec_amount"], b["fee"]) == (None, None, Decimal("-0.001"))


def test_insert_if_absent_and_partial_update(engine: sa.Engine) -> None:
    ledgers = PROJECTION_TABLES["ledgers"]
    with engine.begin() as conn:
        prepared = statements(conn)
        prepared.insert_if_absent(ledgers).execute(
            conn, [{"id": 5, "currency": "USD", "event_id": 1}], "a"
        )
        prepared.insert_if_absent(ledgers).execute(
            conn, [{"id": 5, "currency": "BTC", "event_id": 2}], "a"
        )
        only = prepared.upsert(projector_checkpoints, update=("event_id",))
        now = datetime.now(UTC)
        base = {"projector": "p", "updated_at": now, "stale": True, "synced": False, "skipped": 3}
        only.execute(conn, [base | {"event_id": 1}], "a")
        only.execute(conn, [base | {"event_id": 9, "stale": False, "skipped": 0}], "a")
    with engine.connect() as conn:
        (led,) = _read(conn, ledgers, "a")
        cp = conn.execute(sa.select(projector_checkpoints)).mappings().one()
    assert (led["currency"], led["event_id"]) == ("USD", 1)
    assert (cp["event_id"], cp["stale"], cp["skipped"]) == (9, True, 3)


@pytest.mark.filterwarnings("ignore:Column:sqlalchemy.exc.SAWarning")
def test_a_statement_must_bind_every_column(engine: sa.Engine) -> None:
    from recorder.store.prepared import RowStatement

    table = PROJECTION_TABLES["wallets"]
    with engine.connect() as conn:
        partial = _plain_insert(conn, table).values(account=sa.bindparam("account"))
        with pytest.raises(ValueError, match="wallets"):
            RowStatement(conn.dialect, partial, table)
