"""``compare``: a CSV exported from Bitfinex's report site (trades or ledgers) against the
record.

The file is recognised by its header row (a BOM and Windows line ends are fine); its DATE
cells may be in any of Bitfinex's six date formats, with or without milliseconds, in UTC or a
given zone: the format is the one that reads every DATE of the file (``--date-format`` when
several do; the default ``YY-MM-DD`` is preferred when it is one of them). Rows are matched by
``#`` (the Bitfinex id); the record's rows compared are those of the account whose time lies
within the file's first and last DATE. Numbers compare as exact decimals (``0.10`` equals
``0.1``; exponent notation is read); times to the file's precision (seconds, or
milliseconds). ``FEE PERC`` is derived, not compared.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from recorder.data.tables import TABLES, rows
from recorder.export.bitfinex import DATE_FORMATS, DEFAULT_DATE_FORMAT, HEADERS, pair

# file kind -> (data table, the fields compared: header name -> how the record's row shows it)
_NUMBER = "number"
_TIME = "time"
_TEXT = "text"
FIELDS: dict[str, tuple[str, dict[str, tuple[str, Any]]]] = {
    "trades": (
        "fills",
        {
            "PAIR": (_TEXT, lambda r: pair(r.symbol)),
            "AMOUNT": (_NUMBER, lambda r: r.exec_amount),
            "PRICE": (_NUMBER, lambda r: r.exec_price),
            "FEE": (_NUMBER, lambda r: r.fee),
            "FEE CURRENCY": (_TEXT, lambda r: r.fee_currency),
            "DATE": (_TIME, lambda r: r.mts_create),
            "ORDER ID": (_NUMBER, lambda r: r.order_id),
        },
    ),
    "ledgers": (
        "ledgers",
        {
            "DESCRIPTION": (_TEXT, lambda r: r.description),
            "CURRENCY": (_TEXT, lambda r: r.currency),
            "AMOUNT": (_NUMBER, lambda r: r.amount),
            "BALANCE": (_NUMBER, lambda r: r.balance),
            "DATE": (_TIME, lambda r: r.mts),
            "WALLET": (_TEXT, lambda r: r.wallet),
        },
    ),
}


class CompareError(ValueError):
    """A file compare cannot read (the command exits 2 with this text)."""


@dataclass
class Difference:
    id: str
    field: str
    file: str
    record: str


@dataclass
class Comparison:
    kind: str
    date_format: str
    milliseconds: bool
    start: datetime | None
    end: datetime | None
    file_rows: int = 0
    record_rows: int = 0
    only_in_file: list[str] = field(default_factory=list)
    only_in_record: list[str] = field(default_factory=list)
    differ: list[Difference] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def same(self) -> bool:
        return not (self.only_in_file or self.only_in_record or self.differ)

    def as_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "date_format": self.date_format,
            "milliseconds": self.milliseconds,
            "from": self.start.isoformat() if self.start else None,
            "to": self.end.isoformat() if self.end else None,
            "file_rows": self.file_rows,
            "record_rows": self.record_rows,
            "only_in_file": self.only_in_file,
            "only_in_record": self.only_in_record,
            "differ": [d.__dict__ for d in self.differ],
            "notes": self.notes,
            "same": self.same,
        }


def read_file(path: Path) -> tuple[str, list[str], list[list[str]]]:
    """(kind, header, rows) of a Bitfinex report CSV."""
    try:
        with path.open(encoding="utf-8-sig", newline="") as f:
            table = [row for row in csv.reader(f) if row and any(cell.strip() for cell in row)]
    except (OSError, UnicodeDecodeError) as exc:
        raise CompareError(f"cannot read {path}: {exc}") from None
    if not table:
        raise CompareError(f"{path} is empty: expected a header row")
    header = [cell.strip() for cell in table[0]]
    for kind in FIELDS:
        if [h.upper() for h in header] == HEADERS[kind]:
            return kind, HEADERS[kind], table[1:]
    known = "; ".join(f"{k}: {','.join(HEADERS[k])}" for k in FIELDS)
    raise CompareError(f"{path}: header {','.join(header)!r} is not one compare reads ({known})")


def _parse_with(fmt: str, ms: bool, text: str, tz: tzinfo) -> datetime | None:
    pattern = DATE_FORMATS[fmt] + " %H:%M:%S" + (".%f" if ms else "")
    try:
        return datetime.strptime(text.strip(), pattern).replace(tzinfo=tz).astimezone(UTC)
    except ValueError:
        return None


def date_style(dates: list[str], tz: tzinfo, chosen: str | None) -> tuple[str, bool, list[str]]:
    """(date format, milliseconds, notes) that read every date of the file."""
    ms = any("." in d.strip().split(" ")[-1] for d in dates if d.strip())
    candidates = [chosen] if chosen else list(DATE_FORMATS)
    fits = [
        fmt
        for fmt in candidates
        if all(_parse_with(fmt, ms, d, tz) is not None for d in dates if d.strip())
    ]
    if not fits:
        tried = chosen or ", ".join(DATE_FORMATS)
        raise CompareError(f"the DATE cells are in none of the formats tried ({tried})")
    notes = []
    pick = DEFAULT_DATE_FORMAT if DEFAULT_DATE_FORMAT in fits else fits[0]
    if len(fits) > 1:
        notes.append(
            f"the dates read in {len(fits)} formats ({', '.join(fits)}): {pick} used; give "
            "--date-format to choose"
        )
    return pick, ms, notes


def _number(text: str) -> Decimal | None:
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        return None
    return value if value.is_finite() else None


def _truncate(t: datetime | None, ms: bool) -> datetime | None:
    if t is None:
        return None
    t = t.astimezone(UTC)
    return t.replace(microsecond=(t.microsecond // 1000) * 1000 if ms else 0)


def _show(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    return str(value)


def compare(
    engine: sa.Engine,
    account: str,
    path: Path,
    *,
    tz: tzinfo = UTC,
    date_format: str | None = None,
) -> Comparison:
    kind, header, body = read_file(path)
    table, fields = FIELDS[kind]
    index = {name: i for i, name in enumerate(header)}
    dates = [row[index["DATE"]] if len(row) > index["DATE"] else "" for row in body]
    fmt, ms, notes = date_style(dates, tz, date_format)
    parsed = [_parse_with(fmt, ms, d, tz) for d in dates]
    times = [t for t in parsed if t is not None]
    start = min(times) if times else None
    end = (
        max(times) + (timedelta(milliseconds=1) if ms else timedelta(seconds=1)) if times else None
    )
    result = Comparison(kind, fmt, ms, start, end, notes=notes)
    in_file: dict[str, list[str]] = {}
    for row in body:
        cells = row + [""] * (len(header) - len(row))
        key = cells[0].strip()
        if key in in_file:
            result.notes.append(f"#{key} is in the file twice: the first row is compared")
            continue
        in_file[key] = cells
    result.file_rows = len(in_file)
    if start is None or end is None:
        result.only_in_file = sorted(in_file, key=_id_order)
        return result
    seen: set[str] = set()
    with engine.connect() as conn:
        for record in rows(conn, TABLES[table], account, start, end):
            result.record_rows += 1
            key = str(record.id)
            seen.add(key)
            found = in_file.get(key)
            if found is None:
                result.only_in_record.append(key)
                continue
            for name, (how, read) in fields.items():
                mine = read(record)
                theirs = found[index[name]].strip()
                if not _equal(how, theirs, mine, fmt, ms, tz):
                    shown = _show(_truncate(mine, ms)) if how == _TIME else _show(mine)
                    result.differ.append(Difference(key, name, theirs, shown))
    result.only_in_file = sorted((k for k in in_file if k not in seen), key=_id_order)
    return result


def _id_order(key: str) -> tuple[int, str]:
    return (int(key), key) if key.isdigit() else (0, key)


def _equal(how: str, theirs: str, mine: Any, fmt: str, ms: bool, tz: tzinfo) -> bool:
    if how == _NUMBER:
        if mine is None:
            return theirs == ""
        number = _number(theirs)
        return number is not None and number == Decimal(mine)
    if how == _TIME:
        return _parse_with(fmt, ms, theirs, tz) == _truncate(mine, ms)
    return theirs == ("" if mine is None else str(mine))
