"""Persisting folds: read events after the checkpoint, fold, write rows and the new checkpoint
in one transaction.

Why no event is ever skipped (design.md invariant 2): appends are serialized (SQLite's single
writer; on PostgreSQL each append transaction locks ``events`` first), so ids become visible
in id order. A batch reads the account's high-water mark first (``EventLog.read``) and then
only events up to it, and moves the checkpoint at most to that value, so an event that is
still being committed has a larger id than anything the checkpoint passes.

Each projector reads only its own kinds (``kind IN (...)``), so the log is parsed about once
in total however many projections there are.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any, NamedTuple

import sqlalchemy as sa

from recorder.collector import fewer_collections
from recorder.projections.base import Event, Fold, FoldFlags, Output, Reconciliation
from recorder.projections.collection import CollectionFold
from recorder.projections.guard import Finding
from recorder.projections.registry import FOLDS, make_folds
from recorder.projections.snapshots import STATE_PROJECTIONS, StateFold
from recorder.projections.values import parse_frame
from recorder.store.errors import store_errors
from recorder.store.eventlog import EventLog, StoredEvent
from recorder.store.prepared import RowStatement, statements
from recorder.store.schema import (
    PROJECTION_TABLES,
    fold_findings,
    projector_checkpoints,
    reconciliations,
)

log = logging.getLogger(__name__)

Flags = dict[str, FoldFlags]  # per projection name

BATCH = 5000
# Ids: live accounts this close to the writer's newest mark are read with one query.
NEAR = BATCH
# Tables where an update's missing (null) values keep the stored ones (tu after te).
COALESCE_TABLES = frozenset({"trades", "funding_trades"})


# --- restoring ------------------------------------------------------------------------------


def _stored_rows(conn: sa.Connection, fold: Fold, account: str, up_to: int) -> list[dict[str, Any]]:
    """The rows of ``fold``'s table that its ``restore_from`` asks for."""
    spec = fold.restore_from
    if spec is None:
        return []
    table = PROJECTION_TABLES[fold.name]
    query = sa.select(table).where(table.c.account == account)
    for col, value in spec.equal:
        query = query.where(table.c[col] == value)
    for col, value in spec.not_equal:
        query = query.where(table.c[col] != value)
    if spec.latest_row:
        query = query.where(table.c.event_id <= up_to).order_by(table.c.event_id.desc()).limit(1)
    return [dict(r) for r in conn.execute(query).mappings()]


def read_events(
    conn: sa.Connection,
    log: EventLog,
    account: str,
    kinds: Iterable[str],
    after: int,
    limit: int,
    up_to: int | None = None,
    known_high: int | None = None,
) -> tuple[list[Event], int]:
    """Events of ``kinds`` after ``after``, parsed for the folds; and the position covered
    (``known_high``: see :meth:`EventLog.read`)."""
    page = log.read(
        account, after, limit, kinds, up_to, brief=True, known_high=known_high, conn=conn
    )
    return parse_events(page.events), page.covered


def parse_events(rows: Iterable[StoredEvent]) -> list[Event]:
    """Log rows as the folds read them (a frame that does not parse is counted as skipped
    by the fold)."""
    out = []
    for r in rows:
        try:
            payload = parse_frame(r.frame)
        except ValueError:
            payload = None
        out.append(Event(r.id, r.kind, payload, r.received_at))
    return out


def restore_fold(
    conn: sa.Connection,
    log: EventLog,
    fold: Fold,
    account: str,
    checkpoint: int,
    flags: FoldFlags | None = None,
    *,
    use_rows: bool = True,
) -> None:
    """Bring ``fold`` to its state at ``checkpoint``: hand it its stored rows, then fold again
    the events it needs to complete them (the folds decide both; no findings are kept)."""
    rows = _stored_rows(conn, fold, account, checkpoint) if use_rows else []
    after = fold.restore(rows, flags or FoldFlags(), checkpoint)
    scratch = Output()
    while after < checkpoint:
        batch, covered = read_events(conn, log, account, fold.kinds, after, BATCH, checkpoint)
        for ev in batch:
            fold.apply(ev, scratch)
        scratch.clear()
        if covered == after:
            break
        after = covered


def load_fold(conn: sa.Connection, log: EventLog, fold: Fold, account: str) -> int:
    """Restore ``fold`` from its checkpoint row; returns the checkpoint (0: from scratch)."""
    cp = conn.execute(
        sa.select(projector_checkpoints).where(
            projector_checkpoints.c.projector == fold.name,
            projector_checkpoints.c.account == account,
        )
    ).first()
    if cp is None:
        return 0
    checkpoint = int(cp.event_id)
    restore_fold(conn, log, fold, account, checkpoint, _flags_of(cp))
    return checkpoint


def _flags_of(row: Any) -> FoldFlags:
    """The flags of a ``projector_checkpoints`` row."""
    return FoldFlags(bool(row.stale), bool(row.synced), int(row.skipped))


# --- one batch ------------------------------------------------------------------------------


def write_output(conn: sa.Connection, account: str, out: Output) -> None:
    write_outputs(conn, [(account, out)])


def write_outputs(conn: sa.Connection, outputs: list[tuple[str, Output]]) -> None:
    """The rows of several accounts' batches: one statement per table for all of them."""
    prepared = statements(conn)
    # Per statement, the rows of every account bound to it; upserts first, as before.
    batches: dict[RowStatement, list[Any]] = {}
    for account, out in outputs:
        for name, rows in out.upserts.items():
            table = PROJECTION_TABLES[name]
            stmt = prepared.upsert(table, keep_stored=name in COALESCE_TABLES)
            bound = batches.setdefault(stmt, [])
            gone = []
            for key, row in rows.items():
                if row is None:
                    gone.append(key)
                else:
                    bound.append(stmt.bind(account, row))
            if gone:
                _delete_rows(conn, table, account, gone)
    for account, out in outputs:
        for name, ins_rows in out.inserts_if_absent.items():
            stmt = prepared.insert_if_absent(PROJECTION_TABLES[name])
            batches.setdefault(stmt, []).extend(stmt.bind(account, r) for r in ins_rows.values())
    for stmt, params in batches.items():
        if params:
            stmt.run(conn, params)
    for account, out in outputs:
        _write_findings(conn, account, out)
    unfit = [(account, f) for account, out in outputs for f in out.unfit.values()]
    if unfit:
        _write_unfit(conn, unfit)


def _write_unfit(conn: sa.Connection, unfit: list[tuple[str, Finding]]) -> None:
    """Rows no table could hold, one per (table, event, key) (rare: written the plain
    way; one already there, from a fold of the same events, is replaced)."""
    latest = {(account, f.projection, f.event_id, f.key): f for account, f in unfit}
    c = fold_findings.c
    for account, projection, event_id, key in latest:
        conn.execute(
            fold_findings.delete().where(
                c.account == account,
                c.projection == projection,
                c.event_id == event_id,
                c.key == key,
            )
        )
    conn.execute(
        fold_findings.insert(),
        [
            {
                "account": account,
                "projection": f.projection,
                "key": f.key,
                "event_id": f.event_id,
                "reason": f.reason,
                "row": f.row,
            }
            for (account, _, _, _), f in latest.items()
        ],
    )


def _delete_rows(
    conn: sa.Connection, table: sa.Table, account: str, keys: list[tuple[Any, ...]]
) -> None:
    key_cols = [c.name for c in table.primary_key.columns if c.name != "account"]
    for key in keys:
        conn.execute(
            table.delete().where(
                table.c.account == account,
                *[table.c[c] == v for c, v in zip(key_cols, key, strict=True)],
            )
        )


def _write_findings(conn: sa.Connection, account: str, out: Output) -> None:
    """Reconciliation rows and their explanations (rare: written the plain way)."""
    if out.reconciliations:
        conn.execute(
            reconciliations.insert(),
            [
                {
                    "event_id": r.event_id,
                    "account": account,
                    "projection": r.projection,
                    "key": r.key,
                    "problem": r.problem,
                    "folded": r.folded,
                    "snapshot": r.snapshot,
                }
                for r in out.reconciliations
            ],
        )
    if out.explanations:
        rec = reconciliations.c
        conn.execute(
            reconciliations.update()
            .where(
                rec.account == account,
                rec.projection == sa.bindparam("p"),
                rec.key == sa.bindparam("k"),
                rec.explained_by.is_(None),
                rec.event_id < sa.bindparam("e"),
            )
            .values(explained_by=sa.bindparam("e")),
            [{"p": p, "k": k, "e": e} for p, k, e in out.explanations],
        )


def write_checkpoint(conn: sa.Connection, fold: Fold, account: str, event_id: int) -> None:
    write_checkpoints(conn, [fold], account, event_id)


class Projector:
    """One projection of one account, folding the log in batches from its checkpoint."""

    def __init__(
        self, engine: sa.Engine, fold_factory: Callable[[], Fold], account: str, batch: int = BATCH
    ) -> None:
        self.engine = engine
        self.log = EventLog(engine)
        self.fold_factory = fold_factory
        self.name = fold_factory().name
        self.account = account
        self.batch = batch
        self.fold: Fold | None = None
        self.checkpoint = 0
        self.folded = 0
        self.reconciled = 0  # differences found (for metrics)

    def step(self, up_to: int | None = None) -> int | None:
        """Fold one batch in one transaction; returns the number of events folded, or None
        when already caught up. On any error the in-memory state is dropped (and reloaded
        from the database next time)."""
        try:
            with store_errors(), self.engine.begin() as conn:
                if self.fold is None:
                    fold = self.fold_factory()
                    self.checkpoint = load_fold(conn, self.log, fold, self.account)
                    self.fold = fold
                fold = self.fold
                batch, covered = read_events(
                    conn, self.log, self.account, fold.kinds, self.checkpoint, self.batch, up_to
                )
                if covered == self.checkpoint:
                    return None
                out = Output()
                for ev in batch:
                    fold.apply(ev, out)
                write_output(conn, self.account, out)
                write_checkpoint(conn, fold, self.account, covered)
                found = len(out.reconciliations)
        except BaseException:
            self.fold = None
            raise
        self.checkpoint = covered
        self.folded += len(batch)
        self.reconciled += found
        return len(batch)

    def catch_up(self, up_to: int | None = None) -> int:
        total = 0
        while (n := self.step(up_to)) is not None:
            total += n
        return total


def projectors_for(
    engine: sa.Engine, account: str, only: str | None = None, batch: int = BATCH
) -> list[Projector]:
    names = list(FOLDS) if only is None else [only]
    return [Projector(engine, FOLDS[n], account, batch) for n in names]


class AccountProjector:
    """Every projection of one account, folded in one pass: each batch of the log is read and
    parsed once and fed to every fold that reads its kind, and all rows and checkpoints are
    written in one transaction (as ``rebuild`` does). One task and one query per batch per
    account, instead of one per projection: the live projectors' cost was most of the
    daemon's CPU. Each fold keeps its own checkpoint; a fold ahead of the others (after a
    ``rebuild --projection``) skips the events it has already folded."""

    def __init__(self, engine: sa.Engine, account: str, batch: int = BATCH) -> None:
        self.engine = engine
        self.log = EventLog(engine)
        self.account = account
        self.batch = batch
        self.folds: list[Fold] | None = None
        self.checkpoints: dict[str, int] = {name: 0 for name in FOLDS}
        self.reconciled: dict[str, int] = {name: 0 for name in FOLDS}
        self.folded = 0
        self.views = [ProjectionView(self, name) for name in FOLDS]
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
        positions = {name: int(stored[name].event_id) if name in stored else 0 for name in FOLDS}
        self.stored_flags = {name: _flags_of(r) for name, r in stored.items()}
        # The state snapshots share the table folds only when they stand at one position.
        trio_names = (*STATE_PROJECTIONS, StateFold.name)
        folds = (
            _one_pass_folds(None) if len({positions[n] for n in trio_names}) == 1 else make_folds()
        )
        for fold in folds:
            flags = self.stored_flags.get(fold.name)
            if flags is not None:
                restore_fold(conn, self.log, fold, self.account, positions[fold.name], flags)
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
        out, covered, n = got
        write_output(conn, self.account, out)
        write_all_checkpoints(conn, [self.position(out, covered, n)])
        return n

    def fold_in(
        self, conn: sa.Connection, up_to: int | None = None, known_high: int | None = None
    ) -> tuple[Output, int, int] | None:
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

    def fold_events(self, batch: list[Event], covered: int) -> tuple[Output, int, int]:
        """Fold ``batch`` (this account's events up to ``covered``, in order); each fold
        skips what it has already folded."""
        by_kind = self._by_kind
        cps = self.checkpoints
        out = Output()
        for ev in batch:
            for fold in by_kind.get(ev.kind, ()):
                if ev.id > cps[fold.name]:
                    fold.apply(ev, out)
        return out, covered, len(batch)

    def position(self, out: Output, covered: int, n: int) -> Position:
        """The checkpoints to write beside the changes of :meth:`fold_in` (written in the
        caller's transaction); its positions are taken when that commits
        (:meth:`committed`)."""
        flags = {fold.name: fold.snapshot() for fold in self.folds or []}
        self._pending = (covered, out.reconciliations, n, flags)
        # A fold already past ``covered`` (after `rebuild --projection`) keeps its position.
        ahead = {name: cp for name, cp in self.checkpoints.items() if cp > covered}
        moved_only = flags == self.stored_flags and not ahead
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
                done: list[tuple[AccountProjector, tuple[Output, int, int]]] = []
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
                            full = full or got[2] >= projector.batch
                write_outputs(conn, [(p.account, out) for p, (out, _, _) in done])
                write_all_checkpoints(conn, [p.position(*got) for p, got in done])
                total = sum(n for _, (_, _, n) in done)
        except BaseException:
            for projector in chosen:
                projector.forget()
            raise
        for projector in chosen:
            projector.committed()
        return total, full

    def _fold_together(
        self, conn: sa.Connection, projectors: list[AccountProjector], marks: dict[str, int]
    ) -> tuple[list[tuple[AccountProjector, tuple[Output, int, int]]], bool]:
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


_CHECKPOINT_UPDATES = ("event_id", "updated_at", "stale", "synced", "skipped")
_cp = projector_checkpoints.c
# Every projection's checkpoint of one account moves to one position (names are literals:
# an executemany cannot expand a list parameter).
_MOVE_CHECKPOINTS = (
    projector_checkpoints.update()
    .where(_cp.account == sa.bindparam("a"))
    .where(_cp.projector.in_([sa.literal_column(f"'{name}'") for name in FOLDS]))
    .values(event_id=sa.bindparam("e"), updated_at=sa.bindparam("t"))
)


class Position(NamedTuple):
    """The checkpoints of one account's folds after a step. ``moved_only``: every fold has
    its checkpoint row and the same flags as stored, so only the position changes.
    ``ahead``: folds whose own position is past ``event_id`` (they keep it)."""

    account: str
    folds: list[Fold]
    event_id: int
    moved_only: bool = False
    ahead: dict[str, int] = {}


def write_checkpoints(conn: sa.Connection, folds: list[Fold], account: str, event_id: int) -> None:
    """Every fold's checkpoint in one statement."""
    write_all_checkpoints(conn, [Position(account, folds, event_id)])


def write_all_checkpoints(conn: sa.Connection, positions: list[Position]) -> None:
    """The checkpoints of several accounts' folds. Accounts whose folds' flags are unchanged
    take one row of parameters each (one ``UPDATE`` of all their projections' rows); the
    others one upsert row per fold. At 100 accounts a round wrote 1,600 checkpoint rows, the
    third of the live projectors' time; the flags change only at disconnects and
    snapshots."""
    now = datetime.now(UTC)
    moved = [{"a": p.account, "e": p.event_id, "t": now} for p in positions if p.moved_only]
    if moved and conn.execute(_MOVE_CHECKPOINTS, moved).rowcount != len(moved) * len(FOLDS):
        # A row went missing under us (a `rebuild --projection` cleared it): upsert them all.
        positions = [p._replace(moved_only=False) for p in positions]
    stmt = statements(conn).upsert(projector_checkpoints, update=_CHECKPOINT_UPDATES)
    # Shared values are converted once.
    stamp = stmt.convert("updated_at", now)
    yes, no = stmt.convert("stale", True), stmt.convert("stale", False)
    params = []
    for account, folds, event_id, moved_only, ahead in positions:
        if moved_only:
            continue
        for fold in folds:
            flags = fold.snapshot()
            row = {
                "projector": fold.name,
                "event_id": ahead.get(fold.name, event_id),
                "updated_at": stamp,
                "stale": yes if flags.stale else no,
                "synced": yes if flags.synced else no,
                "skipped": flags.skipped,
            }
            params.append(stmt.bind(account, row, converted=True))
    if params:
        stmt.run(conn, params)


# --- rebuild ---------------------------------------------------------------------------------


def clear_projection(engine: sa.Engine, name: str, account: str) -> None:
    table = PROJECTION_TABLES[name]
    with store_errors(), engine.begin() as conn:
        conn.execute(table.delete().where(table.c.account == account))
        for findings in (reconciliations, fold_findings):
            conn.execute(
                findings.delete().where(
                    findings.c.account == account, findings.c.projection == name
                )
            )
        conn.execute(
            projector_checkpoints.delete().where(
                projector_checkpoints.c.account == account,
                projector_checkpoints.c.projector == name,
            )
        )


def _one_pass_folds(only: str | None) -> list[Fold]:
    """The folds of a rebuild; the state snapshots reuse the table folds when all run."""
    folds = make_folds(only)
    shared = {f.name: f for f in folds if isinstance(f, CollectionFold)}
    if only is None and set(STATE_PROJECTIONS) <= set(shared):
        folds = [f for f in folds if not isinstance(f, StateFold)]
        # Last, so that the shared folds have applied each event before it is snapshotted.
        folds.append(StateFold(shared={n: shared[n] for n in STATE_PROJECTIONS}))
    return folds


def rebuild(
    engine: sa.Engine,
    accounts: Iterable[str],
    only: str | None = None,
    progress: Callable[[int], None] | None = None,
    batch: int = BATCH,
) -> int:
    """Clear and refold projections from the whole log; returns log events folded.

    One pass per account: each batch of events is read and parsed once and fed to every
    projection that reads its kind, in log order; rows and every projection's checkpoint are
    written in one transaction per batch. The folds are the live projectors' folds, so the
    result is the same rows (tests/test_projections.py checks rebuild == live).
    """
    with fewer_collections():
        return _rebuild(engine, accounts, only, progress, batch)


def _rebuild(
    engine: sa.Engine,
    accounts: Iterable[str],
    only: str | None,
    progress: Callable[[int], None] | None,
    batch: int,
) -> int:
    total = 0
    log = EventLog(engine)
    for account in accounts:
        folds = _one_pass_folds(only)
        for fold in folds:
            clear_projection(engine, fold.name, account)
        by_kind: dict[str, list[Fold]] = {}
        for fold in folds:
            for kind in fold.kinds:
                by_kind.setdefault(kind, []).append(fold)
        after = 0
        while True:
            with store_errors(), engine.begin() as conn:
                events_, covered = read_events(conn, log, account, by_kind, after, batch)
                if covered == after:
                    break
                out = Output()
                for ev in events_:
                    for fold in by_kind[ev.kind]:
                        fold.apply(ev, out)
                write_output(conn, account, out)
                write_checkpoints(conn, folds, account, covered)
            after = covered
            total += len(events_)
            if progress:
                progress(len(events_))
    return total


def rebuild_work(engine: sa.Engine, accounts: list[str], only: str | None) -> int:
    """Events a rebuild will fold (the kinds its projections read), for a progress bar."""
    kinds = {k for f in make_folds(only) for k in f.kinds}
    return EventLog(engine).count(accounts, kinds=kinds)


def unexplained_vanished(engine: sa.Engine, account: str) -> dict[str, list[str]]:
    """Keys of orders and positions that a snapshot no longer listed ('unexpected') and that
    no REST answer explains yet, per projection."""
    rec = reconciliations.c
    with store_errors(), engine.connect() as conn:
        found = conn.execute(
            sa.select(rec.projection, rec.key).where(
                rec.account == account,
                rec.projection.in_(["orders", "positions"]),
                rec.problem == "unexpected",
                rec.explained_by.is_(None),
            )
        ).all()
    out: dict[str, list[str]] = {"orders": [], "positions": []}
    for projection, key in found:
        out[projection].append(key)
    return out
