"""The log as a stream: recorded frames in log order, in constant memory."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

import sqlalchemy as sa

from recorder.store.eventlog import PAGE, EventLog, StoredEvent, Within


def iter_frames(
    engine: sa.Engine,
    account: str | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    *,
    chan0_only: bool = False,
    page: int = PAGE,
) -> Iterator[StoredEvent]:
    """Events in id order (``rec.id``, ``rec.received_at``, ``rec.kind``, ``rec.frame``: the
    text exactly as received, ...), one page per query."""
    within = Within(chan0_only=chan0_only, start=start, end=end)
    return EventLog(engine).iterate(account, within=within, page=page)


def as_json(rec: StoredEvent) -> dict[str, object]:
    """One line of ``bfx-recorder replay``."""
    return {
        "id": rec.id,
        "account": rec.account,
        "received_at": rec.received_at.isoformat() if rec.received_at else None,
        "kind": rec.kind,
        "frame": rec.frame,
    }
