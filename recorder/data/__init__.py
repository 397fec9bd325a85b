"""The Python data API: a recording's tables as Arrow, for pandas, polars and notebooks.

    from recorder.data import open_recording

    with open_recording("sqlite:///recorder.db") as rec:       # or a config file's path
        fills = rec.fills(start="2026-12-01", end="2026-12-02")  # a pyarrow.Table
        df = fills.to_pandas()                                  # Decimal objects, UTC times
        pl_df = polars.from_arrow(rec.ledgers())               # exact decimals in polars
        for batch in rec.batches("frames"):                    # any size, flat memory
            ...

One function per table (:data:`recorder.data.tables.TABLES`: ``fills``, ``ledgers``,
``wallet_history``, ``orders``, ``positions``, ``funding_trades``, ``movements``,
``frames``) for an account and a time range ``[start, end)``; :meth:`Recording.state_at`
for the account as of a moment. The database is only read (a read-only command's engine):
use it beside a running daemon. ``bfx-recorder export --format parquet`` is built on it.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

import pyarrow as pa
import sqlalchemy as sa

from recorder.data.tables import (
    BATCH_ROWS,
    TABLES,
    DataError,
    TableSpec,
    arrow_type,
    batches,
    cell,
)

__all__ = ["TABLES", "DataError", "Recording", "open_recording"]

When = datetime | str | None


def as_time(value: When, name: str) -> datetime | None:
    if value is None or isinstance(value, datetime):
        t = value
    else:
        try:
            t = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"{name}: {value!r} is not an ISO 8601 time") from None
    if t is not None and t.tzinfo is None:
        t = t.replace(tzinfo=UTC)  # a time without a zone is UTC, as on the command line
    return t


class Recording:
    """A recording's database, read only. Open with :func:`open_recording`."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    # --- lifetime ---------------------------------------------------------------------------

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Recording:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- what is there ----------------------------------------------------------------------

    def accounts(self) -> list[str]:
        """The accounts the log holds events of."""
        from recorder.store.eventlog import EventLog

        return EventLog(self.engine).accounts()

    def account(self, account: str | None = None) -> str:
        """``account`` if the log has it, else the only one; ValueError naming the known ones."""
        known = self.accounts()
        if account is None:
            if len(known) == 1:
                return known[0]
            raise ValueError(f"the recording has {len(known)} accounts: name one of {known}")
        if account not in known:
            raise ValueError(f"no events for account {account!r}; known: {known}")
        return account

    # --- tables -----------------------------------------------------------------------------

    def schema(self, table: str) -> pa.Schema:
        return _spec(table).schema

    def batches(
        self,
        table: str,
        account: str | None = None,
        start: When = None,
        end: When = None,
        *,
        rows: int = BATCH_ROWS,
    ) -> Iterator[pa.RecordBatch]:
        """The table's rows in ``[start, end)`` as record batches (for any size of log)."""
        spec = _spec(table)
        chosen = self.account(account)
        with self.engine.connect() as conn:
            yield from batches(
                conn, spec, chosen, as_time(start, "start"), as_time(end, "end"), rows
            )

    def table(
        self, table: str, account: str | None = None, start: When = None, end: When = None
    ) -> pa.Table:
        """The table's rows in ``[start, end)`` as one ``pyarrow.Table``."""
        found = list(self.batches(table, account, start, end))
        return pa.Table.from_batches(found, schema=_spec(table).schema)

    def fills(self, account: str | None = None, start: When = None, end: When = None) -> pa.Table:
        return self.table("fills", account, start, end)

    def ledgers(self, account: str | None = None, start: When = None, end: When = None) -> pa.Table:
        return self.table("ledgers", account, start, end)

    def wallet_history(
        self, account: str | None = None, start: When = None, end: When = None
    ) -> pa.Table:
        return self.table("wallet_history", account, start, end)

    def orders(self, account: str | None = None, start: When = None, end: When = None) -> pa.Table:
        return self.table("orders", account, start, end)

    def positions(
        self, account: str | None = None, start: When = None, end: When = None
    ) -> pa.Table:
        return self.table("positions", account, start, end)

    def funding_trades(
        self, account: str | None = None, start: When = None, end: When = None
    ) -> pa.Table:
        return self.table("funding_trades", account, start, end)

    def movements(
        self, account: str | None = None, start: When = None, end: When = None
    ) -> pa.Table:
        return self.table("movements", account, start, end)

    def frames(self, account: str | None = None, start: When = None, end: When = None) -> pa.Table:
        return self.table("frames", account, start, end)

    def state_at(self, at: When, account: str | None = None, what: str = "wallets") -> pa.Table:
        """The account as of ``at`` (everything received up to and including it, the fold of
        ``bfx-recorder state --at``): ``what`` = ``wallets`` (one row per wallet and
        currency), ``orders`` (open) or ``positions`` (active), with the projection table's
        columns."""
        from recorder.projections.state import state_at
        from recorder.store.schema import PROJECTION_TABLES

        moment = as_time(at, "at")
        if moment is None:
            raise ValueError("at: give a time")
        if what not in ("wallets", "orders", "positions"):
            raise ValueError(f"what: one of wallets, orders, positions, not {what!r}")
        chosen = self.account(account)
        state = state_at(self.engine, chosen, moment)
        table = PROJECTION_TABLES[what]
        fields = [pa.field(c.name, arrow_type(c)) for c in table.c if c.name != "account"]
        schema = pa.schema(fields)
        rows = state[what]
        columns = {
            f.name: pa.array([cell(r.get(f.name), f.type) for r in rows], type=f.type)
            for f in schema
        }
        return pa.table(columns, schema=schema)


def _spec(table: str) -> TableSpec:
    try:
        return TABLES[table]
    except KeyError:
        raise ValueError(f"no table {table!r}: one of {', '.join(TABLES)}") from None


def open_recording(source: str | Path) -> Recording:
    """A recording by database URL (``sqlite:///path``, ``postgresql+psycopg://...``) or by
    the path of a configuration file (its ``[database] url``)."""
    from recorder import config as config_mod
    from recorder.store.engine import create_engine

    text = str(source)
    db = config_mod.DatabaseConfig(url=text) if "://" in text else config_mod.load(text).database
    return Recording(create_engine(db))
