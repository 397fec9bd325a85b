"""The append-only event log: append a batch, read after a position, the last position.

Appends happen in one transaction per batch. On PostgreSQL the transaction first takes
``LOCK TABLE events IN EXCLUSIVE MODE``: ids come from a sequence, and without the lock two
writer processes could commit ids out of order, so a projector reading ``id > checkpoint``
might skip a row that commits late (design.md invariant 2). With the lock, appends are
serialized and commit order equals id order on the whole table. Readers are not blocked
(EXCLUSIVE still allows plain SELECTs). SQLite serializes writers by itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

import sqlalchemy as sa

from recorder.store.hashchain import GENESIS, chain_hash_iso
from recorder.store.schema import events
from recorder.store.sessions import update_session


class NewEvent(NamedTuple):
    """One row to append: a frame as read from the socket, or a local marker. (A NamedTuple:
    one is built per frame on the hot path, and it is the cheapest immutable record.)"""

    account: str
    session_id: int | None
    received_at: datetime
    chan_id: int | None
    kind: str
    seq: int | None
    auth_seq: int | None
    frame: str


@dataclass(frozen=True, slots=True)
class SessionChange:
    """An update of a ``sessions`` row, committed in order with the events around it."""

    session_id: int
    values: dict[str, Any]


@dataclass(frozen=True)
class AppendResult:
    last_ids: dict[str, int]  # account -> highest id written in this batch
    last_hashes: dict[str, str]
    count: int


def last_hash(conn: sa.Connection, account: str) -> str:
    value = conn.execute(
        sa.select(events.c.hash)
        .where(events.c.account == account)
        .order_by(events.c.id.desc())
        .limit(1)
    ).scalar()
    return value or GENESIS


_INSERT_COLUMNS = "account, session_id, received_at, chan_id, kind, seq, auth_seq, frame, hash"


def _insert_sql(dialect: str) -> str:
    marks = ", ".join(["?" if dialect == "sqlite" else "%s"] * 9)
    return f"INSERT INTO events ({_INSERT_COLUMNS}) VALUES ({marks})"


def _copy_rows(conn: sa.Connection, rows: list[tuple[Any, ...]]) -> None:
    """PostgreSQL: COPY the batch in, inside the append transaction (several times faster
    than row-by-row INSERTs)."""
    driver: Any = conn.connection.driver_connection
    with driver.cursor() as cur, cur.copy(f"COPY events ({_INSERT_COLUMNS}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)


def append_batch(
    engine: sa.Engine,
    items: Sequence[NewEvent | SessionChange],
    known_hashes: dict[str, str],
) -> AppendResult:
    """Append ``items`` in one transaction, chaining hashes from ``known_hashes`` (account ->
    hash of its last row; missing accounts are read from the database under the lock)."""
    hashes: dict[str, str] = {}
    rows: list[tuple[Any, ...]] = []
    changes: list[SessionChange] = []
    with engine.begin() as conn:
        dialect = conn.dialect.name
        sqlite = dialect == "sqlite"
        if dialect == "postgresql":
            conn.exec_driver_sql("LOCK TABLE events IN EXCLUSIVE MODE")
        for item in items:
            if isinstance(item, SessionChange):
                changes.append(item)
                continue
            acc = item.account
            prev = hashes.get(acc) or known_hashes.get(acc) or last_hash(conn, acc)
            at = item.received_at
            if at.tzinfo is not UTC:
                at = at.astimezone(UTC)
            iso = at.isoformat(timespec="microseconds")  # once, for the hash and SQLite
            h = chain_hash_iso(
                prev,
                acc,
                item.session_id,
                iso,
                item.chan_id,
                item.kind,
                item.seq,
                item.auth_seq,
                item.frame,
            )
            hashes[acc] = h
            # SQLite stores SQLAlchemy's DATETIME text ('YYYY-MM-DD HH:MM:SS.ffffff', UTC).
            stored = f"{iso[:10]} {iso[11:26]}" if sqlite else at
            rows.append(
                (
                    acc,
                    item.session_id,
                    stored,
                    item.chan_id,
                    item.kind,
                    item.seq,
                    item.auth_seq,
                    item.frame,
                    h,
                )
            )
        if rows:
            # The hot path: no per-row SQLAlchemy parameter processing (the values are already
            # in the columns' storage form).
            if sqlite:
                conn.exec_driver_sql(_insert_sql(dialect), rows)
            else:
                _copy_rows(conn, rows)
        for change in changes:
            update_session(conn, change.session_id, change.values)
        last_ids: dict[str, int] = {}
        for acc in hashes:
            last_ids[acc] = int(
                conn.execute(
                    sa.select(sa.func.max(events.c.id)).where(events.c.account == acc)
                ).scalar_one()
            )
    return AppendResult(last_ids, hashes, len(rows))


def accounts(engine: sa.Engine) -> Iterable[str]:
    with engine.connect() as conn:
        return [r[0] for r in conn.execute(sa.select(events.c.account).distinct())]
