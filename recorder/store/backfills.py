"""Backfill windows as the ``backfills`` projection holds them: which ones never finished.

A window cancelled by a stop (its end marker never written) or still incomplete when the
daemon stopped is resumed at the next start, so a gap is not left unbackfilled because the
process restarted. A window counts as finished once a complete window covers its span.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from recorder.store.schema import backfills


@dataclass(frozen=True)
class Unfinished:
    window_from: datetime
    window_to: datetime
    reason: str
    session_id: int | None


def unfinished(engine: sa.Engine, account: str) -> list[Unfinished]:
    """The account's windows that are incomplete (or were never ended) and that no complete
    window covers, oldest first, each span once."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(backfills).where(backfills.c.account == account).order_by(backfills.c.id)
        ).all()
    done = [(r.window_from, r.window_to) for r in rows if r.complete is True]
    out: list[Unfinished] = []
    seen: set[tuple[datetime, datetime]] = set()
    for r in rows:
        if r.complete is True or r.window_from is None or r.window_to is None:
            continue
        span = (r.window_from, r.window_to)
        if span in seen or any(a <= span[0] and span[1] <= b for a, b in done):
            continue
        seen.add(span)
        out.append(Unfinished(r.window_from, r.window_to, r.reason or "restart", r.session_id))
    return out


def initial_fetched(engine: sa.Engine, account: str) -> bool:
    """Whether the account's history before its recording was asked for once (a window of
    reason ``initial``, finished or not: an unfinished one is resumed like any other)."""
    with engine.connect() as conn:
        found = conn.execute(
            sa.select(backfills.c.id)
            .where(backfills.c.account == account, backfills.c.reason == "initial")
            .limit(1)
        ).first()
    return found is not None
