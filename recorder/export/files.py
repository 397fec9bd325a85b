"""What ``bfx-recorder export`` writes: which files for a WHAT and a format, their names, and
writing them streamed (rows as they are read; Parquet in record batches), each to a
temporary name renamed into place when complete (a failed export leaves no half file).

File names: ``<name>_<account>_<range>.<ext>``, ``<name>`` as Bitfinex names its files
(``trades``, ``ledgers``, ``movements``, ``orders``, ``positions``, ``funding-trades``), the
table for Parquet and CSV (``fills``, ``wallet_history``, ...), ``koinly``,
``rotki-trades``/``rotki-events``; ``<range>`` is ``ALL`` or
``FROM_<utc>_TO_<utc>`` (``20261201T000000Z``; ``START``/``NOW`` for an open end).
"""

from __future__ import annotations

import csv
import io
import itertools
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO

import orjson
import sqlalchemy as sa

from recorder.data.tables import TABLES, batches, rows
from recorder.export import bitfinex, tax
from recorder.store.types import utc

WHATS = (
    "trades",
    "ledgers",
    "movements",
    "orders",
    "positions",
    "funding-trades",
    "fills",
    "wallet-history",
    "frames",
    "all",
)
FORMATS = ("bitfinex", "koinly", "rotki", "parquet", "csv")
# WHAT -> the data table (Parquet, CSV)
TABLE_OF = {
    "trades": "fills",
    "fills": "fills",
    "ledgers": "ledgers",
    "movements": "movements",
    "orders": "orders",
    "positions": "positions",
    "funding-trades": "funding_trades",
    "wallet-history": "wallet_history",
    "frames": "frames",
}
BITFINEX_OF = {"trades": "trades", "fills": "trades", **{k: k for k in bitfinex.HEADERS}}


class ExportRefused(ValueError):
    """WHAT has no file in that format (the command names the ones it has)."""


@dataclass
class Range:
    account: str
    start: datetime | None
    end: datetime | None

    def suffix(self) -> str:
        if self.start is None and self.end is None:
            return f"{self.account}_ALL"

        def stamp(t: datetime | None, open_end: str) -> str:
            return utc(t).strftime("%Y%m%dT%H%M%SZ") if t is not None else open_end  # type: ignore[union-attr]

        return f"{self.account}_FROM_{stamp(self.start, 'START')}_TO_{stamp(self.end, 'NOW')}"


Rows = Callable[[sa.Connection, Range], Iterator[list[str]]]


@dataclass
class Job:
    """One output file."""

    name: str
    ext: str  # 'csv' or 'parquet'
    header: list[str] = field(default_factory=list)
    produce: Rows | None = None  # CSV cells, row by row
    table: str | None = None  # Parquet: the data table

    def file_name(self, rng: Range) -> str:
        return f"{self.name}_{rng.suffix()}.{self.ext}"


def csv_cell(value: Any) -> str:
    """A generic CSV cell: decimals plain, times ISO 8601 UTC, JSON as JSON text."""
    if value is None:
        return ""
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, datetime):
        return utc(value).isoformat(timespec="microseconds").replace("+00:00", "Z")  # type: ignore[union-attr]
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return orjson.dumps(value).decode()
    return str(value)


def _table_rows(table: str) -> Rows:
    spec = TABLES[table]

    def produce(conn: sa.Connection, rng: Range) -> Iterator[list[str]]:
        for r in rows(conn, spec, rng.account, rng.start, rng.end):
            yield [csv_cell(v) for v in r]

    return produce


def _bitfinex_rows(what: str, style: bitfinex.DateStyle) -> Rows:
    table, write = bitfinex.FILES[what]
    spec = TABLES[table]

    def produce(conn: sa.Connection, rng: Range) -> Iterator[list[str]]:
        for r in rows(conn, spec, rng.account, rng.start, rng.end):
            yield write(r, style)

    return produce


def _tax_rows(table: str, convert: Callable[[Iterator[Any]], Iterator[list[str]]]) -> Rows:
    spec = TABLES[table]

    def produce(conn: sa.Connection, rng: Range) -> Iterator[list[str]]:
        return convert(rows(conn, spec, rng.account, rng.start, rng.end))

    return produce


def _chain(*parts: Rows) -> Rows:
    def produce(conn: sa.Connection, rng: Range) -> Iterator[list[str]]:
        return itertools.chain.from_iterable(p(conn, rng) for p in parts)

    return produce


def plan(what: str, fmt: str, style: bitfinex.DateStyle) -> list[Job]:
    """The files of ``export WHAT --format FMT``."""
    if fmt in ("parquet", "csv"):
        tables = list(dict.fromkeys(TABLE_OF.values())) if what == "all" else [TABLE_OF[what]]
        if fmt == "parquet":
            return [Job(t, "parquet", table=t) for t in tables]
        return [
            Job(t, "csv", [name for name, _, _ in TABLES[t].columns], _table_rows(t))
            for t in tables
        ]
    if fmt == "bitfinex":
        if what == "all":
            names = list(bitfinex.HEADERS)
        elif what in BITFINEX_OF:
            names = [BITFINEX_OF[what]]
        else:
            raise ExportRefused(
                f"Bitfinex has no {what} file: export one of "
                f"{', '.join(bitfinex.HEADERS)} or all (or use --format parquet or csv)"
            )
        return [Job(n, "csv", bitfinex.HEADERS[n], _bitfinex_rows(n, style)) for n in names]
    fills = what in ("trades", "fills", "all")
    ledger = what in ("ledgers", "all")
    if not (fills or ledger):
        raise ExportRefused(
            f"{fmt} takes trades and ledger items: export trades, ledgers or all (or use "
            "--format parquet or csv)"
        )
    if fmt == "koinly":
        parts = []
        if fills:
            parts.append(_tax_rows("fills", tax.koinly_fills))
        if ledger:
            parts.append(_tax_rows("ledgers", tax.koinly_ledger))
        name = "koinly" if what == "all" else f"koinly-{'trades' if fills else 'ledgers'}"
        return [Job(name, "csv", tax.KOINLY_HEADER, _chain(*parts))]
    jobs = []
    if fills:
        jobs.append(
            Job("rotki-trades", "csv", tax.ROTKI_TRADES_HEADER, _tax_rows("fills", tax.rotki_fills))
        )
    if ledger:
        jobs.append(
            Job(
                "rotki-events",
                "csv",
                tax.ROTKI_EVENTS_HEADER,
                _tax_rows("ledgers", tax.rotki_ledger),
            )
        )
    return jobs


Tick = Callable[[int], None]


def write_csv(job: Job, conn: sa.Connection, rng: Range, out: TextIO, tick: Tick) -> int:
    assert job.produce is not None
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(job.header)
    count = 0
    for row in job.produce(conn, rng):
        writer.writerow(row)
        count += 1
        tick(1)
    return count


def write_parquet(job: Job, conn: sa.Connection, rng: Range, path: Path, tick: Tick) -> int:
    import pyarrow.parquet as pq

    assert job.table is not None
    spec = TABLES[job.table]
    count = 0
    with pq.ParquetWriter(path, spec.schema, compression="zstd") as writer:
        for batch in batches(conn, spec, rng.account, rng.start, rng.end):
            writer.write_batch(batch)
            count += batch.num_rows
            tick(batch.num_rows)
    return count


def write_file(job: Job, conn: sa.Connection, rng: Range, path: Path, tick: Tick) -> int:
    """Write ``job`` to ``path`` through a temporary name in the same folder (renamed into
    place when complete); the rows written."""
    partial = path.with_name(f".{path.name}.partial")
    try:
        if job.ext == "parquet":
            count = write_parquet(job, conn, rng, partial, tick)
        else:
            with partial.open("w", encoding="utf-8", newline="") as out:
                count = write_csv(job, conn, rng, out, tick)
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return count


def write_stdout(job: Job, conn: sa.Connection, rng: Range, tick: Tick) -> int:
    out = io.TextIOWrapper(sys.stdout.buffer, encoding="utf-8", newline="", write_through=False)
    try:
        return write_csv(job, conn, rng, out, tick)
    finally:
        out.flush()
        out.detach()
