"""The account state as of any moment: open orders, active positions, wallets.

:class:`StateFold` runs the same collection folds as the live projections (orders,
positions, wallets) and, every ``every`` log positions, stores their whole state in
``state_snapshots``. :func:`state_at` answers "what did the account look like at T" by
restoring the nearest snapshot before T and folding only the events after it, so it stays
fast on long logs; without snapshots it folds from the start and gives the same answer.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from recorder.projections.base import Event, Output
from recorder.projections.collection import CollectionFold, make_collection_folds
from recorder.projections.values import jsonable
from recorder.store.schema import events, state_snapshots

STATE_PROJECTIONS = ("orders", "positions", "wallets")
SNAPSHOT_EVERY = 5000


def _restore_row(fold: CollectionFold, data: dict[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = {}
    kinds = {f.name: f.kind for f in fold.layout.fields}
    for name, value in data.items():
        kind = kinds.get(name)
        if value is None:
            row[name] = None
        elif kind == "dec":
            row[name] = Decimal(value)
        elif kind == "mts":
            row[name] = datetime.fromisoformat(value)
        else:
            row[name] = value
    return row


class StateFold:
    name = "state_snapshots"

    def __init__(
        self, every: float = SNAPSHOT_EVERY, shared: dict[str, CollectionFold] | None = None
    ) -> None:
        # ``shared``: the orders/positions/wallets folds of a one-pass rebuild, which have
        # already applied each event when it reaches this fold; then this fold only takes
        # the snapshots. Alone (live, state_at) it runs folds of its own.
        self.owns_folds = shared is None
        self.folds = (
            shared
            if shared is not None
            else {f.name: f for f in make_collection_folds() if f.name in STATE_PROJECTIONS}
        )
        self.kinds = frozenset(k for f in self.folds.values() for k in f.kinds)
        self.every = every
        self.last_snapshot = 0
        self._scratch = Output()

    # The checkpoint's flags summarise the inner folds.
    @property
    def stale(self) -> bool:
        return any(f.stale for f in self.folds.values())

    @property
    def synced(self) -> bool:
        return all(f.synced for f in self.folds.values())

    @property
    def skipped(self) -> int:
        return sum(f.skipped for f in self.folds.values())

    def apply(self, event: Event, out: Output) -> None:
        if self.owns_folds:
            for fold in self.folds.values():
                if event.kind in fold.kinds:
                    fold.apply(event, self._scratch)  # rows and findings belong to the others
            self._scratch.clear()
        if event.id - self.last_snapshot >= self.every:
            out.upsert(self.name, (event.id,), {"event_id": event.id, "state": self.dump()})
            self.last_snapshot = event.id

    def dump(self) -> dict[str, Any]:
        return {
            name: {
                "open": [jsonable(row) for row in fold.open.values()],
                "stale": fold.stale,
                "synced": fold.synced,
                "skipped": fold.skipped,
            }
            for name, fold in self.folds.items()
        }

    def restore(self, state: dict[str, Any], event_id: int) -> None:
        for name, fold in self.folds.items():
            data = state[name]
            fold.open = {}
            for raw in data["open"]:
                row = _restore_row(fold, raw)
                fold.open[fold.key(row)] = row
            fold.stale, fold.synced, fold.skipped = data["stale"], data["synced"], data["skipped"]
        self.last_snapshot = event_id

    def load(self, conn: sa.Connection, account: str, checkpoint: int) -> None:
        """Restore the latest snapshot at or before ``checkpoint``, then refold up to it."""
        start = restore_nearest(conn, self, account, checkpoint)
        fold_range(conn, self, account, start, checkpoint)

    def result(self) -> dict[str, list[dict[str, Any]]]:
        """Open orders, active positions and wallets, with the projection tables' columns."""
        return {
            name: [jsonable(row) for row in self.folds[name].open.values()]  # type: ignore[misc]
            for name in STATE_PROJECTIONS
        }


def restore_nearest(conn: sa.Connection, fold: StateFold, account: str, up_to: int) -> int:
    snap = conn.execute(
        sa.select(state_snapshots.c.event_id, state_snapshots.c.state)
        .where(state_snapshots.c.account == account, state_snapshots.c.event_id <= up_to)
        .order_by(state_snapshots.c.event_id.desc())
        .limit(1)
    ).first()
    if snap is None:
        return 0
    fold.restore(snap.state, snap.event_id)
    return int(snap.event_id)


def fold_range(conn: sa.Connection, fold: StateFold, account: str, after: int, up_to: int) -> int:
    from recorder.projections.runner import read_batch

    every, fold.every = fold.every, float("inf")  # replaying: no new snapshots
    folded = 0
    try:
        while after < up_to:
            batch, covered = read_batch(conn, account, fold.kinds, after, 5000, up_to)
            scratch = Output()
            for ev in batch:
                fold.apply(ev, scratch)
            folded += len(batch)
            if covered == after:
                break
            after = covered
    finally:
        fold.every = every
    return folded


def state_at(
    engine: sa.Engine, account: str, at: datetime, *, use_snapshots: bool = True
) -> dict[str, Any]:
    """The account as of ``at``: everything received up to and including ``at``."""
    with engine.connect() as conn:
        # The log prefix up to the last event received at or before ``at`` (walking the
        # (account, received_at) index backwards: O(log n), unlike max(id) over the range).
        last = conn.execute(
            sa.select(events.c.id)
            .where(events.c.account == account, events.c.received_at <= at)
            .order_by(events.c.received_at.desc(), events.c.id.desc())
            .limit(1)
        ).scalar()
        fold = StateFold()
        event_id = int(last or 0)
        start = restore_nearest(conn, fold, account, event_id) if use_snapshots else 0
        fold_range(conn, fold, account, start, event_id)
    stale = fold.stale
    return {
        "account": account,
        "at": at.isoformat(),
        "event_id": event_id,
        "stale": stale,
        **fold.result(),
    }
