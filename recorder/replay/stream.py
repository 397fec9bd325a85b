"""The log as a stream: recorded frames in log order, in constant memory."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from recorder.store.schema import events

PAGE = 5000


@dataclass(frozen=True, slots=True)
class Recorded:
    id: int
    account: str
    session_id: int | None
    received_at: datetime
    chan_id: int | None
    kind: str
    frame: str

    def as_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "account": self.account,
            "received_at": self.received_at.isoformat(),
            "kind": self.kind,
            "frame": self.frame,
        }


def _in_range(
    query: sa.Select[Any], account: str | None, start: datetime | None, end: datetime | None
) -> sa.Select[Any]:
    if account is not None:
        query = query.where(events.c.account == account)
    if start is not None:
        query = query.where(events.c.received_at >= start)
    if end is not None:
        query = query.where(events.c.received_at <= end)
    return query


def iter_frames(
    engine: sa.Engine,
    account: str | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    *,
    chan0_only: bool = False,
    page: int = PAGE,
) -> Iterator[Recorded]:
    """Events in id order, one page per query (keyset pagination: constant memory, and no
    transaction held open while the caller consumes them)."""
    after = 0
    cols = (
        events.c.id,
        events.c.account,
        events.c.session_id,
        events.c.received_at,
        events.c.chan_id,
        events.c.kind,
        events.c.frame,
    )
    while True:
        query = _in_range(sa.select(*cols).where(events.c.id > after), account, start, end)
        if chan0_only:
            query = query.where(events.c.chan_id == 0)
        with engine.connect() as conn:
            rows = conn.execute(query.order_by(events.c.id).limit(page)).all()
        if not rows:
            return
        for r in rows:
            yield Recorded(*r)
        after = rows[-1].id


def count_frames(
    engine: sa.Engine,
    account: str | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
) -> int:
    query = _in_range(sa.select(sa.func.count()).select_from(events), account, start, end)
    with engine.connect() as conn:
        return int(conn.execute(query).scalar_one())
