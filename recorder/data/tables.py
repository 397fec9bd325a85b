"""The tables the data API and the exports read: one query per table, its Arrow schema, and
rows streamed in batches.

Each table is a projection table (or the event log) with, where the row comes from an event,
``received_at`` (when that frame or REST answer was received) and ``source`` (``live``: the
socket; ``backfill``: a REST answer) joined from the log. The column names, their order and
their Arrow types are the published schema (README "Data: tables and schema"): a change is a
CHANGELOG entry, and ``tests/test_exports.py`` freezes them.

Types: amounts are ``decimal128(38, 18)`` (exact; a value with more than 18 decimals or 20
integer digits is refused with an error rather than rounded), times ``timestamp[ns, UTC]``,
ids ``int64``, JSON documents their JSON text.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import orjson
import pyarrow as pa
import sqlalchemy as sa

from recorder.store.schema import (
    events,
    fill_effects,
    funding_trades,
    ledgers,
    movements,
    orders,
    positions,
    trades,
    wallet_history,
)
from recorder.store.types import ExactDecimal, UTCDateTime, utc

DECIMAL = pa.decimal128(38, 18)
TIMESTAMP = pa.timestamp("ns", tz="UTC")
BATCH_ROWS = 20_000


class DataError(Exception):
    """A value the published types cannot hold exactly (never rounded)."""


def arrow_type(column: sa.Column[Any]) -> pa.DataType:
    t = column.type
    if isinstance(t, ExactDecimal):
        return DECIMAL
    if isinstance(t, UTCDateTime):
        return TIMESTAMP
    if isinstance(t, sa.Boolean):
        return pa.bool_()
    if isinstance(t, sa.Integer):
        return pa.int64()
    return pa.string()


@dataclass(frozen=True)
class TableSpec:
    """One exported table: its columns (name, SQL expression, Arrow type), the table whose
    ``account`` column selects the account, the time column of ``--from``/``--to``, and the
    order of its rows."""

    name: str
    columns: tuple[tuple[str, Any, pa.DataType], ...]
    account: Any
    time: Any
    order: tuple[Any, ...]
    joins: tuple[tuple[Any, Any], ...] = ()
    doc: str = ""

    @property
    def schema(self) -> pa.Schema:
        return pa.schema([pa.field(name, kind) for name, _, kind in self.columns])

    def select(self, account: str, start: datetime | None, end: datetime | None) -> sa.Select:
        query = sa.select(*(expr.label(name) for name, expr, _ in self.columns))
        base = self.account.table
        source: Any = base
        for table, on in self.joins:
            source = source.outerjoin(table, on)
        query = query.select_from(source).where(self.account == account)
        if start is not None:
            query = query.where(self.time >= start)
        if end is not None:
            query = query.where(self.time < end)
        return query.order_by(*self.order)


def _values(table: sa.Table, skip: tuple[str, ...] = ()) -> list[tuple[str, Any, pa.DataType]]:
    return [(c.name, c, arrow_type(c)) for c in table.c if c.name not in skip]


E = events.alias("e")
_SOURCE = sa.case((E.c.kind.like("rest.%"), "backfill"), else_="live")


def _from_log() -> tuple[tuple[str, Any, pa.DataType], ...]:
    """``received_at`` and ``source`` of the row's event."""
    return (
        ("received_at", E.c.received_at, TIMESTAMP),
        ("source", _SOURCE, pa.string()),
    )


def _joined(table: sa.Table) -> tuple[tuple[Any, Any], ...]:
    return ((E, E.c.id == table.c.event_id),)


_fe = fill_effects.alias("fe")


def _attribution() -> Any:
    """The weakest attribution of the fill's balance effects (missing < inferred < exact)."""
    rank = sa.case(
        (_fe.c.attribution == "missing", 0), (_fe.c.attribution == "inferred", 1), else_=2
    )
    weakest = (
        sa.select(sa.func.min(rank))
        .where(_fe.c.account == trades.c.account, _fe.c.trade_id == trades.c.id)
        .where(_fe.c.part != "interest")
        .scalar_subquery()
    )
    return sa.case((weakest == 0, "missing"), (weakest == 1, "inferred"), (weakest == 2, "exact"))


def _fills() -> TableSpec:
    cols = _values(trades)
    return TableSpec(
        "fills",
        (*cols, *_from_log(), ("attribution", _attribution(), pa.string())),
        trades.c.account,
        trades.c.mts_create,
        (trades.c.mts_create, trades.c.id),
        _joined(trades),
        "one row per fill (live tu or backfilled trades row) with its fee; attribution: the "
        "weakest of its balance effects in fill_effects (NULL: none recorded)",
    )


def _plain(
    table: sa.Table, time: Any, order: tuple[Any, ...], doc: str, name: str = ""
) -> TableSpec:
    return TableSpec(
        name or table.name,
        (*_values(table), *_from_log()),
        table.c.account,
        time,
        order,
        _joined(table),
        doc,
    )


def _wallet_history() -> TableSpec:
    h = wallet_history.c
    cols = [(c.name, c, arrow_type(c)) for c in wallet_history.c if c.name != "source"]
    kind = ("kind", h.source, pa.string())  # ws, wu or ledger: what the row comes from
    source = ("source", sa.case((h.source == "ledger", "backfill"), else_="live"), pa.string())
    return TableSpec(
        "wallet_history",
        (*cols, kind, ("received_at", E.c.received_at, TIMESTAMP), source),
        h.account,
        h.at,
        (h.at, h.event_id, h.ref),
        ((E, E.c.id == h.event_id),),
        "one row per balance change: every wallet of a ws snapshot, every wu, every ledger "
        "entry (kind); at: the exchange's time for ledger entries, else when received",
    )


def _frames() -> TableSpec:
    c = events.c
    cols = [
        ("id", c.id, pa.int64()),
        ("account", c.account, pa.string()),
        ("session_id", c.session_id, pa.int64()),
        ("received_at", c.received_at, TIMESTAMP),
        ("kind", c.kind, pa.string()),
        ("seq", c.seq, pa.int64()),
        ("auth_seq", c.auth_seq, pa.int64()),
        ("frame", c.frame, pa.string()),
        ("hash", c.hash, pa.string()),
    ]
    return TableSpec(
        "frames",
        tuple(cols),
        c.account,
        c.received_at,
        (c.id,),
        (),
        "the raw log: every frame and marker verbatim, with its hash-chain link",
    )


TABLES: dict[str, TableSpec] = {
    spec.name: spec
    for spec in (
        _fills(),
        _plain(
            ledgers,
            ledgers.c.mts,
            (ledgers.c.mts, ledgers.c.id),
            "the exchange's ledger entries with Bitfinex's category code",
        ),
        _wallet_history(),
        _plain(
            orders,
            orders.c.mts_update,
            (orders.c.mts_update, orders.c.id),
            "every order's latest state (open or final)",
        ),
        _plain(
            positions,
            positions.c.mts_update,
            (positions.c.mts_update, positions.c.position_key),
            "every position's latest state",
        ),
        _plain(
            funding_trades,
            funding_trades.c.mts_create,
            (funding_trades.c.mts_create, funding_trades.c.id),
            "funding trades (fte/ftu or backfilled)",
        ),
        _plain(
            movements,
            movements.c.mts_updated,
            (movements.c.mts_updated, movements.c.id),
            "deposits and withdrawals (REST only)",
        ),
        _frames(),
    )
}


def cell(value: Any, kind: pa.DataType) -> Any:
    if value is None:
        return None
    if kind == DECIMAL:
        if not isinstance(value, Decimal):
            value = Decimal(str(value))
        exponent = value.as_tuple().exponent
        if isinstance(exponent, int) and exponent < -18:
            trimmed = value.normalize()
            exponent = trimmed.as_tuple().exponent
            if isinstance(exponent, int) and exponent < -18:
                raise DataError(f"{value} has more than 18 decimals: not exported, not rounded")
            value = trimmed
        return value
    if kind == TIMESTAMP:
        return utc(value)
    if pa.types.is_string(kind) and not isinstance(value, str):
        return orjson.dumps(value).decode()
    return value


def batches(
    conn: sa.Connection,
    spec: TableSpec,
    account: str,
    start: datetime | None = None,
    end: datetime | None = None,
    rows: int = BATCH_ROWS,
) -> Iterator[pa.RecordBatch]:
    """The table's rows for ``account`` in [start, end) as record batches of ``rows`` rows
    (read with a server-side cursor where the driver has one: memory stays flat)."""
    schema = spec.schema
    kinds = [f.type for f in schema]
    result = conn.execution_options(yield_per=rows).execute(spec.select(account, start, end))
    for part in result.partitions(rows):
        columns: list[list[Any]] = [[] for _ in kinds]
        for row in part:
            for i, kind in enumerate(kinds):
                columns[i].append(cell(row[i], kind))
        try:
            arrays = [pa.array(col, type=kind) for col, kind in zip(columns, kinds, strict=True)]
        except (pa.ArrowInvalid, OverflowError) as exc:
            raise DataError(f"{spec.name}: a value does not fit {DECIMAL}: {exc}") from None
        yield pa.RecordBatch.from_arrays(arrays, schema=schema)


def rows(
    conn: sa.Connection,
    spec: TableSpec,
    account: str,
    start: datetime | None = None,
    end: datetime | None = None,
    size: int = BATCH_ROWS,
) -> Iterator[sa.Row[Any]]:
    """The same rows as :func:`batches`, as SQL rows (the CSV formats write them as read)."""
    result = conn.execution_options(yield_per=size).execute(spec.select(account, start, end))
    yield from result
