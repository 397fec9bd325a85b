"""From frame values to column values, exactly.

Amounts keep every digit of the frame's text. Frames are parsed with orjson (fast) when no
number in them is long enough to lose digits as a binary float: then ``Decimal(repr(f))``
gives back exactly the digits the exchange wrote (its serializer writes floats as their
shortest round-trip text). A frame with a run of 16 or more digits (a long amount, a
fractional millisecond time) is parsed with ``parse_float=Decimal`` instead. Exchange times
(``MTS``) become UTC datetimes; a magnitude check turns second-based values (seen in ``n``
frames) into milliseconds first (protocol.md §8 item 2).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson

from recorder.protocol.layouts import Layout

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
SECONDS_BELOW_INT = 100_000_000_000  # < 1e11: a seconds timestamp, not milliseconds
SECONDS_BELOW = Decimal(SECONDS_BELOW_INT)


# 16+ digits and dots in a row: a number a float may not hold exactly (or a long string of
# digits, which only costs the slower parse). Found by mapping digits and dots to "1" and
# everything else to " " (one C pass) and searching the result: a fifth of the cost of a
# regular expression, which tries a match at every digit.
_DIGIT_MAP = bytes(0x31 if chr(i) in "0123456789." else 0x20 for i in range(256))
_LONG_RUN = b"1" * 16
# The exact parser, built once (``json.loads`` with a keyword builds a decoder per call).
_EXACT = json.JSONDecoder(parse_float=Decimal)


def has_long_number(text: str) -> bool:
    return _LONG_RUN in text.encode().translate(_DIGIT_MAP)


def parse_frame(text: str) -> Any:
    if not has_long_number(text):
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            pass  # integers beyond 64 bits, or not JSON: let json say which
    return _EXACT.decode(text)


# Times seen recently: an order's creation time comes back in every update of it.
_TIMES: dict[int, datetime] = {}
_TIMES_KEPT = 8_192


def to_datetime(value: Any) -> datetime | None:
    """Milliseconds (or seconds, by magnitude) since the epoch; None for what is not a time a
    datetime can hold (found by fuzzing: a frame may carry any number)."""
    try:
        if type(value) is int:  # the common case: integer milliseconds
            found = _TIMES.get(value)
            if found is None:
                if abs(value) >= SECONDS_BELOW_INT:
                    found = EPOCH + timedelta(milliseconds=value)
                else:
                    found = EPOCH + timedelta(seconds=value)
                if len(_TIMES) >= _TIMES_KEPT:
                    _TIMES.clear()
                _TIMES[value] = found
            return found
        if type(value) is float:
            value = Decimal(repr(value))
        if not isinstance(value, Decimal) or not value.is_finite():
            return None
        ms = value
        if abs(ms) < SECONDS_BELOW:
            ms *= 1000
        # Microsecond precision, as the databases keep it.
        return EPOCH + timedelta(microseconds=int((ms * 1000).to_integral_value()))
    except (OverflowError, ValueError, ArithmeticError):
        return None


# Floats seen recently -> their Decimal: prices and amounts repeat (the conversion was a
# tenth of a fold's time). Zero is left out (0.0 == -0.0 would share an entry).
_DECIMALS: dict[float, Decimal] = {}
_DECIMALS_KEPT = 8_192  # a bounded cache: about a megabyte


def to_decimal(value: Any) -> Decimal | None:
    if type(value) is float:
        found = _DECIMALS.get(value)
        if found is not None:
            return found
        if not math.isfinite(value):
            return None
        exact = Decimal(repr(value))
        if value:
            if len(_DECIMALS) >= _DECIMALS_KEPT:
                _DECIMALS.clear()
            _DECIMALS[value] = exact
        return exact
    if isinstance(value, Decimal):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return Decimal(value)
    return None


def to_int(value: Any) -> int | None:
    if type(value) is int:  # the common case first
        return value
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, Decimal) and value.is_finite() and value == value.to_integral_value():
        return int(value)
    if type(value) is float and value.is_integer():
        return int(value)
    return None


def to_text(value: Any) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else json.dumps(plain(value))


def plain(value: Any) -> Any:
    """JSON-able form: Decimals as int or float (for the JSON columns' metadata)."""
    t = type(value)
    if t is Decimal:
        return int(value) if value == value.to_integral_value() else float(value)
    if t is float:  # as a Decimal of the same text would give
        return int(value) if value.is_integer() else value
    if t is list:
        return [plain(v) for v in value]
    if t is dict:
        return {k: plain(v) for k, v in value.items()}
    return value


_CONVERT = {"int": to_int, "dec": to_decimal, "text": to_text, "mts": to_datetime, "json": plain}


# Per field kind, the conversion written inline for the generated converters, with the
# common case (an int id, a cached float, a string, a cached time) first and the converter
# itself for the rest: the same value as ``_CONVERT[kind](v)`` in every case.
_INLINE = {
    "int": "(v if v.__class__ is int else to_int(v))",
    "dec": "((_decimal_seen(v) or to_decimal(v)) if v.__class__ is float else to_decimal(v))",
    "text": "(v if v.__class__ is str else to_text(v))",
    "mts": "((_time_seen(v) if v.__class__ is int else None) or to_datetime(v))",
    "json": "plain(v)",
}
Converter = Callable[[list[Any]], dict[str, Any]]
_COMPILED: dict[str, Converter] = {}
# The last array converted, its layout and its row: the folds of one pass convert the same
# record one after the other (a wu for the wallets, their history and the fill effects; a
# tu for the trades and the fill effects). Compared by identity: the array is kept alive
# here, so another array can never match; one tuple, replaced whole, so a thread only ever
# meets its own arrays.
_LAST: tuple[Layout | None, Any, dict[str, Any]] = (None, None, {})


def to_row(layout: Layout, array: list[Any]) -> dict[str, Any]:
    """Column values for one record array (short arrays give ``None`` for missing fields).
    A new dict each call: the caller may change it."""
    global _LAST
    last_layout, last_array, last_row = _LAST
    if last_array is array and last_layout is layout:
        return dict(last_row)
    convert = _COMPILED.get(layout.name)
    if convert is None:
        convert = _COMPILED[layout.name] = compile_converter(layout)
    row = convert(array)
    _LAST = (layout, array, row)
    return dict(row)


def compile_converter(layout: Layout) -> Converter:
    """One straight-line function converting ``layout``'s records: no loop over the fields,
    each conversion's common case inline (a loop calling a converter per field was a seventh
    of a rebuild)."""
    lines = ["def convert(array):", "    n = len(array)", "    row = {}"]
    for f in layout.fields:
        lines += [
            f"    v = array[{f.index}] if n > {f.index} else None",
            f"    row[{f.name!r}] = None if v is None else {_INLINE[f.kind]}",
        ]
    lines.append("    return row")
    scope: dict[str, Any] = {
        "to_int": to_int,
        "to_decimal": to_decimal,
        "to_text": to_text,
        "to_datetime": to_datetime,
        "plain": plain,
        # The caches are cleared in place, never replaced: their bound ``get`` stays theirs.
        "_decimal_seen": _DECIMALS.get,
        "_time_seen": _TIMES.get,
    }
    exec(compile("\n".join(lines), f"<converter of {layout.name}>", "exec"), scope)
    found: Converter = scope["convert"]
    return found


def jsonable(row: dict[str, Any] | None) -> dict[str, Any] | None:
    """A row as JSON-able data for ``reconciliations``: decimals as exact, canonical strings
    (``30046.0`` and ``30046`` read back from the database give the same text)."""
    if row is None:
        return None
    out: dict[str, Any] = {}
    for k, v in row.items():
        if isinstance(v, Decimal):
            out[k] = format(v.normalize(), "f")
        elif isinstance(v, datetime):
            out[k] = v.isoformat()
        else:
            out[k] = plain(v)
    return out
