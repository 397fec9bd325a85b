"""State snapshots: the open orders, active positions and wallets every N events of them.

:class:`StateFold` runs the same collection folds as the live projections (orders, positions,
wallets) and, after every ``every`` events of their kinds in the account's log, stores their
whole state in ``state_snapshots``.
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
# Events of the account's orders, positions and wallets between two snapshots: what `state
# --at` folds at most. Counted per account, not in log positions: with 100 accounts in one
# log, 5,000 positions meant a snapshot every 50 events of each account.
SNAPSHOT_EVERY = 1000


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


def _in_key_order(fold: CollectionFold) -> list[dict[str, Any] | None]:
    """The open set as JSON-able rows, by key: the same list however the set was built (a
    fold restored from its table holds the rows in the table's order, not the log's)."""
    try:
        ordered = sorted(fold.open.items())
    except TypeError:  # a key with None among numbers (a malformed record): still one order
        ordered = sorted(fold.open.items(), key=lambda kv: str(kv[0]))
    return [jsonable(row) for _, row in ordered]


class StateFold:
    name = "state_snapshots"
    # Its state is the latest snapshot at or before the checkpoint, plus the events after it.
    restore_from = RestoreFrom(latest_row=True)

    def __init__(
        self, every: float | None = None, shared: dict[str, CollectionFold] | None = None
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
        self.every = SNAPSHOT_EVERY if every is None else every
        # Events of its kinds since the last snapshot: a function of the log, so that live
        # folding, restarts and rebuilds snapshot at the same positions (a restore folds the
        # events after the stored snapshot again, which counts them again).
        self.since = 0
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
        self.since += 1
        if self.since >= self.every:
            out.upsert(self.name, (event.id,), {"event_id": event.id, "state": self.dump()})
            self.since = 0

    def dump(self) -> dict[str, Any]:
        return {
            name: {
                "open": _in_key_order(fold),
                "stale": fold.stale,
                "synced": fold.synced,
                "skipped": fold.skipped,
            }
            for name, fold in self.folds.items()
        }

    def restore(self, rows: list[dict[str, Any]], flags: FoldFlags, checkpoint: int) -> int:
        """From the stored snapshot in ``rows`` (none: from the start); the events after it
        up to ``checkpoint`` are to be folded again. Sharing the table folds (one pass), the
        state is theirs and already restored: the events after the snapshot are folded
        again only to be counted."""
        self.since = 0
        if not self.owns_folds:
            return int(rows[0]["event_id"]) if rows else 0
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
        return event_id

    def result(self) -> dict[str, list[dict[str, Any]]]:
        """Open orders, active positions and wallets, with the projection tables' columns."""
        return {
            name: _in_key_order(self.folds[name])  # type: ignore[misc]
            for name in STATE_PROJECTIONS
        }
