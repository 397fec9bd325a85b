"""The append-only event log: append a batch, read after a position, the last position.

Appends happen in one transaction per batch. On PostgreSQL the transaction first takes
``LOCK TABLE events IN EXCLUSIVE MODE``: ids come from a sequence, and without the lock two
writer processes could commit ids out of order, so a projector reading ``id > checkpoint``
might skip a row that commits late (design.md invariant 2). With the lock, appends are
serialized and commit order equals id order on the whole table. Readers are not blocked
(EXCLUSIVE still allows plain SELECTs). SQLite serializes writers by itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from recorder.store.hashchain import GENESIS, chain_hash
from recorder.store.schema import events
from recorder.store.sessions import update_session


@dataclass(frozen=True, slots=True)
class NewEvent:
    """One row to append: a frame as read from the socket, or a local marker."""

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


def append_batch(
    engine: sa.Engine,
    items: Sequence[NewEvent | SessionChange],
    known_hashes: dict[str, str],
) -> AppendResult:
    """Append ``items`` in one transaction, chaining hashes from ``known_hashes`` (account ->
    hash of its last row; missing accounts are read from the database under the lock)."""
    hashes: dict[str, str] = {}
    rows: list[dict[str, Any]] = []
    changes: list[SessionChange] = []
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql("LOCK TABLE events IN EXCLUSIVE MODE")
        for item in items:
            if isinstance(item, SessionChange):
                changes.append(item)
                continue
            acc = item.account
            prev = hashes.get(acc) or known_hashes.get(acc) or last_hash(conn, acc)
            h = chain_hash(
                prev, acc, item.session_id, item.received_at, item.chan_id, item.kind,
                item.seq, item.auth_seq, item.frame,
            )  # fmt: skip
            hashes[acc] = h
            rows.append(
                {
                    "account": acc,
                    "session_id": item.session_id,
                    "received_at": item.received_at,
                    "chan_id": item.chan_id,
                    "kind": item.kind,
                    "seq": item.seq,
                    "auth_seq": item.auth_seq,
                    "frame": item.frame,
                    "hash": h,
                }
            )
        if rows:
            conn.execute(events.insert(), rows)
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


def max_id(engine: sa.Engine, account: str | None = None) -> int:
    query = sa.select(sa.func.max(events.c.id))
    if account is not None:
        query = query.where(events.c.account == account)
    with engine.connect() as conn:
        return int(conn.execute(query).scalar() or 0)


def read_after(
    conn: sa.Connection, account: str, after_id: int, limit: int, up_to: int | None = None
) -> list[sa.Row[Any]]:
    """Up to ``limit`` events of ``account`` with ``after_id < id <= up_to``, in id order."""
    query = events.select().where(events.c.account == account, events.c.id > after_id)
    if up_to is not None:
        query = query.where(events.c.id <= up_to)
    return list(conn.execute(query.order_by(events.c.id).limit(limit)))


def iter_events(
    engine: sa.Engine, account: str | None = None, batch: int = 5000
) -> Iterator[sa.Row[Any]]:
    """Every event (of one account or all), in id order, in constant memory."""
    after = 0
    while True:
        with engine.connect() as conn:
            query = events.select().where(events.c.id > after)
            if account is not None:
                query = query.where(events.c.account == account)
            rows = list(conn.execute(query.order_by(events.c.id).limit(batch)))
        if not rows:
            return
        yield from rows
        after = rows[-1].id


def accounts(engine: sa.Engine) -> Iterable[str]:
    with engine.connect() as conn:
        return [r[0] for r in conn.execute(sa.select(events.c.account).distinct())]
