"""The runners: :class:`AccountProjector` (every projection of one account, folded in one
pass, checkpointed batches), :class:`ProjectionPool` (several accounts in one transaction, the
daemon's live folding), :class:`Projector` (one projection alone, for snapshots at another
interval), and :class:`ProjectionView` (one projection as metrics and tests see it).
Reading is :mod:`recorder.projections.reading`, writing :mod:`recorder.projections.writing`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import NamedTuple

import sqlalchemy as sa

from recorder.projections.base import Event, Fold, Output, Reconciliation
from recorder.projections.reading import (
    BATCH,
    Flags,
    _flags_of,
    parse_events,
    read_events,
    restore_fold,
)
from recorder.projections.registry import Selection, make_folds, one_pass_folds, selected
from recorder.projections.snapshots import STATE_PROJECTIONS, StateFold
from recorder.projections.writing import (
    Position,
    write_all_checkpoints,
    write_output,
    write_outputs,
)
from recorder.store.errors import store_errors
from recorder.store.eventlog import EventLog
from recorder.store.schema import projector_checkpoints

log = logging.getLogger(__name__)


class Folded(NamedTuple):
    """One folded batch of an account, not written yet: its changes, the position it
    covers, and how many events it read."""

    out: Output
    covered: int
    events: int


# Ids: live accounts this close to the writer's newest mark are read with one query.
NEAR = BATCH


class AccountProjector:
    """Every projection of one account, folded in one pass: each batch of the log is read and
    parsed once and fed to every fold that reads its kind, and all rows and checkpoints are
    written in one transaction. The one fold loop: the daemon folds with it, ``rebuild``
    clears and folds with it (``only``: one projection alone). One task and one query per
    batch per account, instead of one per projection: the live projectors' cost was most of
    the daemon's CPU. Each fold keeps its own checkpoint; a fold ahead of the others (after
    a ``rebuild --projection``) skips the events it has already folded."""

    def __init__(
        self, engine: sa.Engine, account: str, batch: int = BATCH, only: Selection = None
    ) -> None:
        self.engine = engine
        self.log = EventLog(engine)
        self.account = account
        self.batch = batch
        # None: every projection (then one statement may move all their checkpoints).
        self.only = None if only is None else selected(only)
        names = list(selected(only))
        self.folds: list[Fold] | None = None
        self.checkpoints: dict[str, int] = {name: 0 for name in names}
        self.reconciled: dict[str, int] = {name: 0 for name in names}
        self.folded = 0
        self.views = [ProjectionView(self, name) for name in names]
        self._by_kind: dict[str, list[Fold]] = {}
        # What the last step_in wrote, taken when its transaction commits.
        self._pending: tuple[int, list[Reconciliation], int, Flags] | None = None
        # The flags of its checkpoint rows as committed (a name is absent while it has no
        # row): while the folds' flags equal them, a step only moves the positions.
        self.stored_flags: Flags = {}
        # Told (with the account and its new position) after each fold transaction commits:
        # its rows are visible from then on (the benchmarks time projection lag with it).
        self.observers: list[Callable[[str, int], None]] = []

    @property
    def checkpoint(self) -> int:
        """How far every projection has folded."""
        return min(self.checkpoints.values())

    def _load(self, conn: sa.Connection) -> list[Fold]:
        stored = {
            r.projector: r
            for r in conn.execute(
                sa.select(projector_checkpoints).where(
                    projector_checkpoints.c.account == self.account
                )
            )
        }
        names = list(self.checkpoints)
        positions = {name: int(stored[name].event_id) if name in stored else 0 for name in names}
        self.stored_flags = {name: _flags_of(r) for name, r in stored.items() if name in names}
        # The state snapshots share the table folds only when they stand at one position.
        trio_names = (*STATE_PROJECTIONS, StateFold.name)
        if all(n in positions for n in trio_names) and len({positions[n] for n in trio_names}) == 1:
            folds = one_pass_folds(self.only)
        else:
            folds = make_folds(self.only)
        for fold in folds:
            flags = self.stored_flags.get(fold.name)
            if flags is not None:
                spec = fold.restore_from
                # Rows of other tables are the fold's state only at the same position.
                use_rows = spec is None or all(
                    positions.get(n, int(stored[n].event_id) if n in stored else -1)
                    == positions[fold.name]
                    for n in spec.also
                )
                restore_fold(
                    conn,
                    self.log,
                    fold,
                    self.account,
                    positions[fold.name],
                    flags,
                    use_rows=use_rows,
                )
        self.checkpoints = positions
        return folds

    def step(self, up_to: int | None = None) -> int | None:
        """Fold one batch for every projection in one transaction; the number of events
        read, or None when caught up. On any error the in-memory state is dropped."""
        try:
            with store_errors(), self.engine.begin() as conn:
                n = self.step_in(conn, up_to)
        except BaseException:
            self.forget()
            raise
        self.committed()
        return n

    def step_in(self, conn: sa.Connection, up_to: int | None = None) -> int | None:
        """:meth:`step` inside the caller's transaction (the caller drops the state with
        :meth:`forget` if that transaction fails)."""
        got = self.fold_in(conn, up_to)
        if got is None:
            return None
        write_output(conn, self.account, got.out)
        write_all_checkpoints(conn, [self.position(got)])
        return got.events

    def fold_in(
        self, conn: sa.Connection, up_to: int | None = None, known_high: int | None = None
    ) -> Folded | None:
        """Read and fold one batch (nothing written yet): its changes, the position it
        covers and the events read; None when caught up. ``known_high``: see
        :meth:`EventLog.read`."""
        by_kind = self.load(conn)
        start = self.checkpoint
        batch, covered = read_events(
            conn, self.log, self.account, by_kind, start, self.batch, up_to, known_high
        )
        if covered == start:
            return None
        return self.fold_events(batch, covered)

    def load(self, conn: sa.Connection) -> dict[str, list[Fold]]:
        """The folds, restored from the tables if needed; per kind, the folds that read it."""
        if self.folds is None:
            self.folds = self._load(conn)
            self._by_kind = {}
            for fold in self.folds:
                for kind in fold.kinds:
                    self._by_kind.setdefault(kind, []).append(fold)
        return self._by_kind

    def fold_events(self, batch: list[Event], covered: int) -> Folded:
        """Fold ``batch`` (this account's events up to ``covered``, in order); each fold
        skips what it has already folded."""
        by_kind = self._by_kind
        cps = self.checkpoints
        out = Output()
        for ev in batch:
            for fold in by_kind.get(ev.kind, ()):
                if ev.id > cps[fold.name]:
                    fold.apply(ev, out)
        return Folded(out, covered, len(batch))

    def position(self, folded: Folded) -> Position:
        """The checkpoints to write beside the changes of :meth:`fold_in` (written in the
        caller's transaction); its positions are taken when that commits
        (:meth:`committed`)."""
        flags = {fold.name: fold.snapshot() for fold in self.folds or []}
        covered = folded.covered
        self._pending = (covered, folded.out.reconciliations, folded.events, flags)
        # A fold already past ``covered`` (after `rebuild --projection`) keeps its position.
        ahead = {name: cp for name, cp in self.checkpoints.items() if cp > covered}
        # (One statement moves every projection's position: only when all are folded here.)
        moved_only = flags == self.stored_flags and not ahead and self.only is None
        return Position(self.account, self.folds or [], covered, moved_only, ahead)

    def committed(self) -> None:
        """The transaction of the last :meth:`step_in` committed: take its positions."""
        pending = self._pending
        if pending is None:
            return
        covered, found, folded, flags = pending
        self._pending = None
        self.stored_flags = flags
        for name in self.checkpoints:
            self.checkpoints[name] = max(self.checkpoints[name], covered)
        for r in found:
            self.reconciled[r.projection] = self.reconciled.get(r.projection, 0) + 1
        self.folded += folded
        for observe in self.observers:
            observe(self.account, covered)

    def forget(self) -> None:
        """The transaction failed: reload from the tables next time."""
        self.folds = None
        self._pending = None
        self.stored_flags = {}

    def catch_up(self, up_to: int | None = None) -> int:
        total = 0
        while (n := self.step(up_to)) is not None:
            total += n
        return total


class ProjectionPool:
    """The account projectors of one process, stepped together: one worker-thread call and
    one transaction fold every account that has new events (100 accounts must not mean 100
    transactions per commit)."""

    def __init__(self, engine: sa.Engine, projectors: list[AccountProjector]) -> None:
        self.engine = engine
        self.projectors = {p.account: p for p in projectors}
        self.stood_back = 0  # rounds put off while the writer was behind (live.stand_back)
        self.failing: str | None = None  # the last round's error while rounds fail
        self.failures = 0  # failed rounds, in all

    def step(
        self, accounts: list[str], known_high: dict[str, int] | None = None
    ) -> tuple[int, bool]:
        """One batch for each of ``accounts``, all written with one statement per table:
        the number of events folded, and whether a page was full (more is waiting: fold
        again now rather than after gathering commits). ``known_high``: the writer's
        committed marks of accounts this process records (see :meth:`EventLog.read`): the
        accounts near the newest mark are read with one query."""
        chosen = [self.projectors[a] for a in accounts if a in self.projectors]
        marks = known_high or {}
        full = False
        try:
            with store_errors(), self.engine.begin() as conn:
                for projector in chosen:
                    projector.load(conn)
                high = max((marks[p.account] for p in chosen if p.account in marks), default=0)
                together = [p for p in chosen if p.account in marks and high - p.checkpoint <= NEAR]
                done: list[tuple[AccountProjector, Folded]] = []
                if len(together) > 1:
                    done, full = self._fold_together(conn, together, marks)
                else:
                    together = []
                read = {p.account for p in together}
                for projector in chosen:
                    if projector.account not in read:
                        got = projector.fold_in(conn, known_high=marks.get(projector.account))
                        if got is not None:
                            done.append((projector, got))
                            full = full or got.events >= projector.batch
                write_outputs(conn, [(p.account, got.out) for p, got in done])
                write_all_checkpoints(conn, [p.position(got) for p, got in done])
                total = sum(got.events for _, got in done)
        except BaseException:
            for projector in chosen:
                projector.forget()
            raise
        for projector in chosen:
            projector.committed()
        return total, full

    def _fold_together(
        self, conn: sa.Connection, projectors: list[AccountProjector], marks: dict[str, int]
    ) -> tuple[list[tuple[AccountProjector, Folded]], bool]:
        """One page of every account in ``projectors``, up to the newest committed mark
        (and whether it was full).
        Each account's position moves to its own mark (where a page of its own would have
        ended: rebuild and live keep the same checkpoints) or to the end of a full page."""
        low = min(p.checkpoint for p in projectors)
        high = max(marks[p.account] for p in projectors)
        kinds = {k for p in projectors for k in p.load(conn)}
        limit = min(p.batch for p in projectors)
        page = EventLog(self.engine).read_accounts(
            [p.account for p in projectors], low, high, limit, kinds, conn=conn
        )
        mine: dict[str, list[Event]] = {p.account: [] for p in projectors}
        for event, row in zip(parse_events(page.events), page.events, strict=True):
            mine[row.account].append(event)
        done = []
        for p in projectors:
            covered = min(page.covered, marks[p.account])
            if covered > p.checkpoint:
                done.append((p, p.fold_events(mine[p.account], covered)))
        return done, len(page.events) >= limit


class ProjectionView:
    """One projection of an :class:`AccountProjector`, as metrics, health and tests see it."""

    def __init__(self, owner: AccountProjector, name: str) -> None:
        self.owner = owner
        self.name = name
        self.account = owner.account

    @property
    def checkpoint(self) -> int:
        return self.owner.checkpoints[self.name]

    @property
    def reconciled(self) -> int:
        return self.owner.reconciled.get(self.name, 0)
