"""Upserts of whole rows as driver statements prepared once per dialect.

Why: the projectors write thousands of rows per second. Built the usual SQLAlchemy way, each
call constructs an ``INSERT .. ON CONFLICT`` statement (``excluded`` column proxies, a cache
key) and each row goes through SQLAlchemy's parameter processing; profiled, that was most of
a live projector's time at 100 accounts and a third of ``rebuild``'s. Here the statement is
compiled once (by SQLAlchemy, for the connection's dialect: same SQL, same casts), each
column's own bind processor is looked up once, and rows are converted with them and handed
to the driver's ``executemany``. The stored values are exactly what SQLAlchemy would have
bound (tests/test_prepared.py compares both ways on every projection table).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

from recorder.store.types import ExactDecimal, UTCDateTime

Converter = Callable[[Any], Any]


class RowStatement:
    """One compiled statement over every column of a table, and how to bind a row to it."""

    def __init__(self, dialect: Dialect, stmt: sa.Insert, table: sa.Table) -> None:
        compiled = stmt.compile(dialect=dialect)
        self.sql = compiled.string
        self.positional = bool(dialect.positional)
        names = list(compiled.positiontup or ()) if self.positional else list(compiled.binds)
        columns = {c.name: c for c in table.c}
        if set(names) != set(columns):
            raise ValueError(f"{table.name}: the statement must bind every column once")
        self.names = tuple(names)
        self.converters: tuple[tuple[int, Converter], ...] = tuple(
            (i, proc)
            for i, name in enumerate(names)
            if (proc := _converter(columns[name], dialect)) is not None
        )
        self.account_index = self.names.index("account") if "account" in columns else -1

        self._converter = {self.names[i]: proc for i, proc in self.converters}

    def bind(self, account: str | None, row: Mapping[str, Any], *, converted: bool = False) -> Any:
        """``row`` (missing columns are NULL) in the driver's parameter form; ``converted``:
        its values are already in storage form (see :meth:`convert`)."""
        values = [row.get(name) for name in self.names]
        if self.account_index >= 0 and account is not None:
            values[self.account_index] = account
        if not converted:
            for i, convert in self.converters:
                value = values[i]
                if value is not None:
                    values[i] = convert(value)
        return tuple(values) if self.positional else dict(zip(self.names, values, strict=True))

    def convert(self, name: str, value: Any) -> Any:
        """``value`` of column ``name`` in storage form (to convert a value shared by many
        rows once)."""
        convert = self._converter.get(name)
        return value if convert is None or value is None else convert(value)

    def execute(
        self, conn: sa.Connection, rows: Iterable[Mapping[str, Any]], account: str | None = None
    ) -> None:
        """Write ``rows`` (of ``account``)."""
        self.run(conn, [self.bind(account, row) for row in rows])

    def run(self, conn: sa.Connection, params: list[Any]) -> None:
        """Execute for rows already bound with :meth:`bind` (one driver ``executemany``)."""
        if params:
            conn.exec_driver_sql(self.sql, params)


# Times written recently -> their text: an order's creation time, a trade's time, ... come
# back in row after row (formatting them was a twentieth of a fold on SQLite).
_SQLITE_TIMES: dict[datetime, str] = {}
_SQLITE_TIMES_KEPT = 8_192


def _sqlite_time(value: datetime) -> str:
    """UTCDateTime on SQLite in one call: what its bind processor and SQLAlchemy's DATETIME
    processor make of it together (naive UTC text with microseconds)."""
    if value.tzinfo is UTC:  # the usual case: cut "+00:00" off
        text = _SQLITE_TIMES.get(value)
        if text is None:
            if len(_SQLITE_TIMES) >= _SQLITE_TIMES_KEPT:
                _SQLITE_TIMES.clear()
            text = _SQLITE_TIMES[value] = value.isoformat(" ", "microseconds")[:26]
        return text
    if value.tzinfo is None:
        raise ValueError("naive datetime given where UTC is required")
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


def _converter(column: sa.Column[Any], dialect: Dialect) -> Converter | None:
    """The column's bind processor; for the two types every projection row is full of, on
    SQLite, one function doing what SQLAlchemy's chain of two does (the same result: see
    tests/test_prepared.py)."""
    if dialect.name == "sqlite":
        if isinstance(column.type, UTCDateTime):
            return _sqlite_time
        if isinstance(column.type, ExactDecimal):
            return float  # what str() then SQLAlchemy's float conversion give
    return column.type.dialect_impl(dialect).bind_processor(dialect)


# The columns that say where a row came from (the event that set it, the REST answer that
# confirmed it): never merged like values.
PROVENANCE = ("event_id", "confirmed_by")


class Statements:
    """The prepared statements of one dialect, built on first use."""

    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect
        # Imported here: a SQLite command has no use for the PostgreSQL dialect (and its
        # asyncio import, 35 ms of a `state` run), nor the daemon on PostgreSQL for SQLite's.
        self._insert_fn: Callable[[sa.Table], Any]
        if dialect.name == "postgresql":
            from sqlalchemy.dialects import postgresql

            self._insert_fn = postgresql.insert
        else:
            from sqlalchemy.dialects import sqlite

            self._insert_fn = sqlite.insert
        self._cache: dict[tuple[str, str], RowStatement] = {}

    def _insert(self, table: sa.Table) -> Any:
        """``INSERT`` binding every column by its name."""
        binds = {c.name: sa.bindparam(c.name, type_=c.type) for c in table.c}
        return self._insert_fn(table).values(binds)

    def _on_conflict(
        self,
        table: sa.Table,
        kind: str,
        assignments: Callable[[Any, list[str]], dict[str, Any]],
    ) -> RowStatement:
        """``INSERT .. ON CONFLICT (pk) DO UPDATE SET assignments(stmt, pk)``, built once per
        (table, kind)."""
        key = (table.name, kind)
        found = self._cache.get(key)
        if found is None:
            pk = [c.name for c in table.primary_key.columns]
            stmt = self._insert(table)
            set_ = assignments(stmt, pk)
            found = RowStatement(
                self.dialect, stmt.on_conflict_do_update(index_elements=pk, set_=set_), table
            )
            self._cache[key] = found
        return found

    def upsert(
        self, table: sa.Table, *, keep_stored: bool = False, update: Iterable[str] | None = None
    ) -> RowStatement:
        """Insert, or on a primary-key conflict overwrite the other columns (``update``: only
        these). ``keep_stored``: a NULL in the new row keeps the stored value (``tu`` after
        ``te``)."""
        cols = tuple(update) if update is not None else None

        def assignments(stmt: Any, pk: list[str]) -> dict[str, Any]:
            names = cols if cols is not None else [c.name for c in table.c if c.name not in pk]
            if keep_stored:
                return {c: sa.func.coalesce(stmt.excluded[c], table.c[c]) for c in names}
            return {c: stmt.excluded[c] for c in names}

        return self._on_conflict(table, f"upsert:{keep_stored}:{cols}", assignments)

    def confirm(self, table: sa.Table) -> RowStatement:
        """Insert; on a primary-key conflict keep every stored value (a REST answer fills
        only what the frame left NULL), keep the stored ``event_id`` (the frame that set the
        row) and name the answer in ``confirmed_by`` (provenance, audit issue)."""

        def assignments(stmt: Any, pk: list[str]) -> dict[str, Any]:
            set_: dict[str, Any] = {
                c.name: sa.func.coalesce(table.c[c.name], stmt.excluded[c.name])
                for c in table.c
                if c.name not in pk and c.name not in PROVENANCE
            }
            set_["confirmed_by"] = _confirmed_by(stmt)
            return set_

        return self._on_conflict(table, "confirm", assignments)

    def confirm_final(self, table: sa.Table) -> RowStatement:
        """Insert; on a primary-key conflict take the new values (a history row is the
        entity's final state; a NULL keeps the stored value), keep the stored ``event_id``
        when no value changed (the frame that closed the entity said it all) and name the
        answer in ``confirmed_by`` (``base.final_merge`` does the same for a row still in
        the batch)."""

        def assignments(stmt: Any, pk: list[str]) -> dict[str, Any]:
            names = [c.name for c in table.c if c.name not in pk and c.name not in PROVENANCE]
            same = sa.and_(
                *(
                    sa.or_(
                        stmt.excluded[c].is_(None),
                        stmt.excluded[c].is_not_distinct_from(table.c[c]),
                    )
                    for c in names
                )
            )
            set_: dict[str, Any] = {
                c: sa.func.coalesce(stmt.excluded[c], table.c[c]) for c in names
            }
            set_["event_id"] = sa.case((same, table.c.event_id), else_=stmt.excluded.event_id)
            set_["confirmed_by"] = _confirmed_by(stmt)
            return set_

        return self._on_conflict(table, "confirm_final", assignments)

    def insert_if_absent(self, table: sa.Table) -> RowStatement:
        """Insert unless a row with that primary key exists."""
        key = (table.name, "absent")
        found = self._cache.get(key)
        if found is None:
            pk = [c.name for c in table.primary_key.columns]
            stmt = self._insert(table).on_conflict_do_nothing(index_elements=pk)
            found = RowStatement(self.dialect, stmt, table)
            self._cache[key] = found
        return found


def _confirmed_by(stmt: Any) -> Any:
    """The answer a confirmation names (a row merged from two answers of one batch names the
    later one already)."""
    return sa.func.coalesce(stmt.excluded["confirmed_by"], stmt.excluded["event_id"])


_BY_DIALECT: weakref.WeakKeyDictionary[Dialect, Statements] = weakref.WeakKeyDictionary()


def statements(conn: sa.Connection) -> Statements:
    """The statements for ``conn``'s dialect (one set per engine)."""
    found = _BY_DIALECT.get(conn.dialect)
    if found is None:
        found = _BY_DIALECT[conn.dialect] = Statements(conn.dialect)
    return found
