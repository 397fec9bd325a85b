"""State snapshots: the open orders, active positions and wallets every N log positions.

:class:`StateFold` runs the same collection folds as the live projections (orders, positions,
wallets) and, every ``every`` log positions, stores their whole state in ``state_snapshots``.
``state --at T`` (:mod:`recorder.projections.state`) restores the nearest snapshot before T
and folds only the events after it. Pure: no I/O here.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from recorder.projections.base import Event, FoldFlags, Output, RestoreFrom
from recorder.projections.collection import COLLECTION_FOLDS, CollectionFold
from recorder.projections.values import jsonable

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
    # Its state is the latest snapshot at or before the checkpoint, plus the events after it.
    restore_from = RestoreFrom(latest_row=True)

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
            else {name: COLLECTION_FOLDS[name]() for name in STATE_PROJECTIONS}
        )
        self.kinds = frozenset(k for f in self.folds.values() for k in f.kinds)
        self.every = every
        self.last_snapshot = 0
        self._scratch = Output()

    def snapshot(self) -> FoldFlags:
        """The checkpoint's flags summarise the inner folds."""
        flags = [f.snapshot() for f in self.folds.values()]
        return FoldFlags(
            stale=any(f.stale for f in flags),
            synced=all(f.synced for f in flags),
            skipped=sum(f.skipped for f in flags),
        )

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

    def restore(self, rows: list[dict[str, Any]], flags: FoldFlags, checkpoint: int) -> int:
        """From the stored snapshot in ``rows`` (none: from the start); the events after it
        up to ``checkpoint`` are to be folded again. Sharing the table folds (one pass), the
        state is theirs and already restored: only the last snapshot's position is taken."""
        if not self.owns_folds:
            self.last_snapshot = int(rows[0]["event_id"]) if rows else 0
            return checkpoint
        self.last_snapshot = 0
        if not rows:
            for name in self.folds:
                self.folds[name].restore([], FoldFlags(), 0)
            return 0
        state, event_id = rows[0]["state"], int(rows[0]["event_id"])
        for name, fold in self.folds.items():
            data = state[name]
            fold.restore(
                [_restore_row(fold, raw) for raw in data["open"]],
                FoldFlags(data["stale"], data["synced"], data["skipped"]),
                event_id,
            )
        self.last_snapshot = event_id
        return event_id

    def result(self) -> dict[str, list[dict[str, Any]]]:
        """Open orders, active positions and wallets, with the projection tables' columns."""
        return {
            name: [jsonable(row) for row in self.folds[name].open.values()]  # type: ignore[misc]
            for name in STATE_PROJECTIONS
        }
