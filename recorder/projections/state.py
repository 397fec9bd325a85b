"""The account as of any moment: open orders, active positions, wallets.

:func:`state_at` answers "what did the account look like at T" by restoring the nearest
stored state snapshot (:mod:`recorder.projections.snapshots`) before T and folding only the
events after it, so it stays fast on long logs; without snapshots it folds from the start and
gives the same answer.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa

from recorder.projections.reading import restore_fold
from recorder.projections.snapshots import StateFold
from recorder.store.eventlog import EventLog


def state_at(
    engine: sa.Engine, account: str, at: datetime, *, use_snapshots: bool = True
) -> dict[str, Any]:
    """The account as of ``at``: everything received up to and including ``at``."""
    log = EventLog(engine)
    event_id = log.at_time(account, at)
    fold = StateFold(every=float("inf"))  # answering a question: no new snapshots
    with engine.connect() as conn:
        restore_fold(conn, log, fold, account, event_id, use_rows=use_snapshots)
    return {
        "account": account,
        "at": at.isoformat(),
        "event_id": event_id,
        "stale": fold.snapshot().stale,
        **fold.result(),
    }
