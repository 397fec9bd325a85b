"""Bitfinex's own report CSVs (audit.md §4.1): the files tax tools already import.

The header rows are Bitfinex's, to the letter (importers recognise the files by them). ``#``
is the Bitfinex id; ``PAIR`` is ``BTC/USD`` (a colon pair loses only its prefix:
``tTESTBTC:TESTUSD`` -> ``TESTBTC/TESTUSD``; a funding symbol ``fUSD`` -> ``USD``); DATE is
``<date> HH:mm:ss[.SSS]`` in one of Bitfinex's six date formats and a chosen time zone;
numbers are plain decimals as the exchange sent them (never exponent notation, never through
a float). ``FEE PERC`` is computed: the fee as a percentage of the traded value in the fee's
currency (``|fee| / |amount|`` for a fee in the base currency, ``|fee| / (|amount| x
price)`` for one in the quote currency), to 8 decimals, without a ``%`` sign.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson

from recorder.projections.fills import split_symbol

# Bitfinex's date formats (bfx-report's data-validator): name -> strftime pattern.
DATE_FORMATS: dict[str, str] = {
    "YY-MM-DD": "%y-%m-%d",
    "YYYY-MM-DD": "%Y-%m-%d",
    "DD-MM-YY": "%d-%m-%y",
    "DD-MM-YYYY": "%d-%m-%Y",
    "MM-DD-YY": "%m-%d-%y",
    "MM-DD-YYYY": "%m-%d-%Y",
}
DEFAULT_DATE_FORMAT = "YY-MM-DD"

HEADERS: dict[str, list[str]] = {
    "trades": [
        "#",
        "PAIR",
        "AMOUNT",
        "PRICE",
        "FEE",
        "FEE PERC",
        "FEE CURRENCY",
        "DATE",
        "ORDER ID",
    ],
    "ledgers": ["#", "DESCRIPTION", "CURRENCY", "AMOUNT", "BALANCE", "DATE", "WALLET"],
    "movements": [
        "#",
        "DATE",
        "CURRENCY",
        "STATUS",
        "AMOUNT",
        "FEES",
        "DESCRIPTION",
        "TRANSACTION ID",
        "NOTE",
    ],
    "orders": [
        "#",
        "PAIR",
        "TYPE",
        "PREVIOUS ORDER TYPE",
        "AMOUNT",
        "EXECUTED AMOUNT",
        "PRICE",
        "AVERAGE EXECUTION PRICE",
        "TRAILING PRICE",
        "CREATED",
        "UPDATED",
        "STATUS",
        "METADATA",
    ],
    "positions": [
        "#",
        "PAIR",
        "AMOUNT",
        "BASE PRICE",
        "CLOSE PRICE",
        "FUNDING COST",
        "FUNDING TYPE",
        "STATUS",
        "UPDATED",
        "CREATED",
        "LEVERAGE",
    ],
    "funding-trades": ["#", "PAIR", "AMOUNT", "RATE", "PERIOD", "MAKER", "DATE", "OFFER ID"],
}
_EIGHT = Decimal("1e-8")
_HUNDRED = Decimal(100)
_OFFSET = re.compile(r"^(?:UTC)?([+-])(\d{1,2})(?::?(\d{2}))?$")


class FormatError(ValueError):
    """An option value the formats do not know (the command names the option)."""


def zone(name: str) -> tzinfo:
    """``UTC``, an offset (``+02:00``, ``-0530``, ``UTC+2``) or an IANA name
    (``Europe/Zurich``)."""
    if name.upper() in ("UTC", "Z", "GMT"):
        return UTC
    found = _OFFSET.match(name.strip())
    if found:
        sign, hours, minutes = found.groups()
        delta = timedelta(hours=int(hours), minutes=int(minutes or 0))
        if delta >= timedelta(hours=24):
            raise FormatError(f"{name!r} is not an offset within a day")
        return timezone(-delta if sign == "-" else delta)
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise FormatError(
            f"{name!r} is not a time zone: give UTC, an offset like +02:00 or a name like "
            "Europe/Zurich"
        ) from None


@dataclass(frozen=True)
class DateStyle:
    """How DATE cells are written: one of :data:`DATE_FORMATS`, milliseconds or not, a zone."""

    date_format: str = DEFAULT_DATE_FORMAT
    milliseconds: bool = False
    tz: tzinfo = UTC

    def __post_init__(self) -> None:
        if self.date_format not in DATE_FORMATS:
            raise FormatError(
                f"{self.date_format!r} is not one of Bitfinex's date formats: "
                + ", ".join(DATE_FORMATS)
            )

    def write(self, t: datetime | None) -> str:
        if t is None:
            return ""
        local = t.astimezone(self.tz)
        text = local.strftime(DATE_FORMATS[self.date_format] + " %H:%M:%S")
        if self.milliseconds:
            text += f".{local.microsecond // 1000:03d}"
        return text


def plain(value: Any) -> str:
    """A number as a plain decimal (no exponent, digits as stored); '' for NULL."""
    if value is None:
        return ""
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def pair(symbol: Any) -> str:
    """``tBTCUSD`` -> ``BTC/USD``; ``tTESTBTC:TESTUSD`` -> ``TESTBTC/TESTUSD``; ``fUSD`` ->
    ``USD``; anything else as it is."""
    if not isinstance(symbol, str):
        return ""
    split = split_symbol(symbol)
    if split is not None:
        return f"{split[0]}/{split[1]}"
    if symbol.startswith(("t", "f")) and len(symbol) > 1:
        return symbol[1:]
    return symbol


def fee_perc(row: Any) -> str:
    """The fee as a percentage of the traded value in the fee's currency ('' when the fee or
    its currency is not one of the pair's)."""
    fee, amount, price = row.fee, row.exec_amount, row.exec_price
    split = split_symbol(row.symbol)
    if fee is None or amount is None or split is None or amount == 0:
        return ""
    base, quote = split
    if row.fee_currency == base:
        value = abs(amount)
    elif row.fee_currency == quote and price:
        value = abs(amount * price)
    else:
        return ""
    try:
        perc = (abs(fee) / value * _HUNDRED).quantize(_EIGHT, ROUND_HALF_EVEN).normalize()
    except (InvalidOperation, ZeroDivisionError):
        return ""
    return format(perc, "f")


def _json(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else orjson.dumps(value).decode()


def _executed(row: Any) -> str:
    if row.amount_orig is None or row.amount is None:
        return ""
    return plain(row.amount_orig - row.amount)


RowWriter = Callable[[Any, DateStyle], list[str]]

# what -> (the table of recorder.data.tables it reads, how a row becomes the file's cells)
FILES: dict[str, tuple[str, RowWriter]] = {
    "trades": (
        "fills",
        lambda r, d: [
            plain(r.id),
            pair(r.symbol),
            plain(r.exec_amount),
            plain(r.exec_price),
            plain(r.fee),
            fee_perc(r),
            r.fee_currency or "",
            d.write(r.mts_create),
            plain(r.order_id),
        ],
    ),
    "ledgers": (
        "ledgers",
        lambda r, d: [
            plain(r.id),
            r.description or "",
            r.currency or "",
            plain(r.amount),
            plain(r.balance),
            d.write(r.mts),
            r.wallet or "",
        ],
    ),
    "movements": (
        "movements",
        lambda r, d: [
            plain(r.id),
            d.write(r.mts_updated),
            r.currency or "",
            r.status or "",
            plain(r.amount),
            plain(r.fees),
            r.address or "",
            r.transaction_id or "",
            r.note or "",
        ],
    ),
    "orders": (
        "orders",
        lambda r, d: [
            plain(r.id),
            pair(r.symbol),
            r.order_type or "",
            r.type_prev or "",
            plain(r.amount_orig),
            _executed(r),
            plain(r.price),
            plain(r.price_avg),
            plain(r.price_trailing),
            d.write(r.mts_create),
            d.write(r.mts_update),
            r.order_status or "",
            _json(r.meta),
        ],
    ),
    "positions": (
        "positions",
        lambda r, d: [
            plain(r.position_id) if r.position_id is not None else r.position_key,
            pair(r.symbol),
            plain(r.amount),
            plain(r.base_price),
            "",  # the close price: neither the socket's nor the REST positions carry one
            plain(r.margin_funding),
            plain(r.margin_funding_type),
            r.status or "",
            d.write(r.mts_update),
            d.write(r.mts_create),
            plain(r.leverage),
        ],
    ),
    "funding-trades": (
        "funding_trades",
        lambda r, d: [
            plain(r.id),
            pair(r.symbol),
            plain(r.amount),
            plain(r.rate),
            plain(r.period),
            plain(r.maker),
            d.write(r.mts_create),
            plain(r.offer_id),
        ],
    ),
}
