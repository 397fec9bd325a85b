"""Rows checked before they are written: what a table cannot hold is a finding, not a crash.

The log keeps whatever the exchange sent, so a fold meets rows no table can hold: an order
without an id, an id beyond 64 bits, a wallet without a currency, text with a NUL character
(PostgreSQL text cannot hold one). Such a row is left out of its table and written to
``fold_findings`` (projection, event, key, reason, the row), and the rest of the frame and of
the log is folded as usual. The check is a pure function of the row, so a rebuild finds the
same rows as the live fold did.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import orjson
import sqlalchemy as sa

from recorder.projections.values import jsonable
from recorder.store.eventlog import storable
from recorder.store.types import ExactDecimal, JSONDoc

INT_MIN, INT_MAX = -(2**63), 2**63 - 1
# Amounts beyond this many digits (either way) are no amount a table should hold (PostgreSQL
# NUMERIC refuses exponents past its limits; SQLite would round them).
DECIMAL_EXPONENT_MAX = 1000


@dataclass(frozen=True)
class Finding:
    projection: str
    event_id: int  # the event that produced the row (0 when the row names none)
    key: str
    reason: str
    row: str


class RowCheck:
    """The checks of one table, compiled once: key columns present, integers within 64
    bits, text and JSON documents without NUL, amounts finite and of sane magnitude."""

    def __init__(self, table: sa.Table) -> None:
        self.table = table.name
        self.keys = tuple(c.name for c in table.primary_key.columns if c.name != "account")
        self.ints = tuple(
            c.name for c in table.c if isinstance(c.type, sa.Integer) and c.name != "account"
        )
        self.texts = tuple(
            c.name for c in table.c if isinstance(c.type, sa.String) and c.name != "account"
        )
        self.decimals = tuple(c.name for c in table.c if isinstance(c.type, ExactDecimal))
        self.documents = tuple(c.name for c in table.c if isinstance(c.type, JSONDoc.__class__))

    def problem(self, row: dict[str, Any]) -> str | None:
        """Why ``row`` cannot be written, or None."""
        get = row.get
        for name in self.keys:
            if get(name) is None:
                return f"{name} is missing (part of the key)"
        for name in self.ints:
            value = get(name)
            if value is not None and not (isinstance(value, int) and INT_MIN <= value <= INT_MAX):
                return f"{name} {value!r} is not an integer of 64 bits"
        for name in self.texts:
            value = get(name)
            if value is not None and (not isinstance(value, str) or "\x00" in value):
                return f"{name} is not text a column can hold"
        for name in self.decimals:
            value = get(name)
            if value is not None and (
                not isinstance(value, Decimal)
                or not value.is_finite()
                or abs(value.adjusted()) > DECIMAL_EXPONENT_MAX
            ):
                return f"{name} {value!r} is not an amount a column can hold"
        for name in self.documents:
            value = get(name)
            if value is not None and _holds_nul(value):
                return f"{name} holds a NUL character (PostgreSQL JSON cannot)"
        return None

    def finding(self, key: tuple[Any, ...], row: dict[str, Any], reason: str) -> Finding:
        event_id = row.get("event_id")
        return Finding(
            self.table,
            event_id if isinstance(event_id, int) and INT_MIN <= event_id <= INT_MAX else 0,
            _json(list(key)),
            reason,
            _json(jsonable(row)),
        )


def storable_key(key: tuple[Any, ...]) -> bool:
    """Whether a row of this key could be in a table: no key text with NUL, no key integer
    beyond 64 bits (the checks above refuse such rows; a delete naming them would fail on
    PostgreSQL)."""
    for part in key:
        if isinstance(part, str):
            if "\x00" in part:
                return False
        elif isinstance(part, int) and not INT_MIN <= part <= INT_MAX:
            return False
    return True


def _holds_nul(value: Any) -> bool:
    """Whether a JSON value holds a NUL character in any string (key or value). Written by
    orjson first (one C pass; it escapes NUL as ``\\u0000``): walking every document of a
    notification's or an order's metadata in Python was a fifth of folding them. Only a hit
    (or what orjson cannot write) is walked, since an escaped backslash before ``u0000`` also
    reads as one."""
    if isinstance(value, dict | list):
        try:
            if b"\\u0000" not in orjson.dumps(value):
                return False
        except TypeError:  # a key that is no string, an integer beyond 64 bits, ...
            pass
    return _walk_for_nul(value)


def _walk_for_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_walk_for_nul(k) or _walk_for_nul(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(_walk_for_nul(v) for v in value)
    return False


def escape_nul(value: Any) -> Any:
    """``value`` with every NUL character in its strings written as the JSON escape
    ``\\u0000`` (six characters), as the event log stores such frames (``storable``): for
    the findings' JSON (reconciliation rows), which PostgreSQL could not store otherwise."""
    if isinstance(value, str):
        return storable(value)
    if isinstance(value, dict):
        return {escape_nul(k): escape_nul(v) for k, v in value.items()}
    if isinstance(value, list):
        return [escape_nul(v) for v in value]
    return value


def _json(value: Any) -> str:
    """Any value as JSON text (integers of any size kept exact; anything else as text)."""
    return json.dumps(value, default=str, sort_keys=True)


_CHECKS: dict[str, RowCheck | None] = {}


def check_named(name: str) -> RowCheck | None:
    """The check of projection table ``name`` (None for what is no table)."""
    try:
        return _CHECKS[name]
    except KeyError:
        from recorder.store.schema import PROJECTION_TABLES

        table = PROJECTION_TABLES.get(name)
        found = _CHECKS[name] = RowCheck(table) if table is not None else None
        return found
