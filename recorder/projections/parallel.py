"""``rebuild --jobs N``: the fold spread over N worker processes.

Why processes: a fold is Python from end to end (parsing, converting, deciding, binding), so
threads would take turns at one interpreter; a second process folds on the second core.
Each worker opens its own engine (PostgreSQL: its own connection; SQLite: writers take turns
at the file, each waiting up to the busy timeout) and folds whole units with the daemon's
own loop (:class:`~recorder.projections.projector.AccountProjector`), committing rows and
checkpoints batch by batch as a one-process rebuild does. So the result is the same rows
(tests compare them), and a stopped rebuild leaves what a stopped one-process rebuild leaves:
committed batches, each fold at its own checkpoint, which the daemon folds on from.

A unit is one account's projections, or, when there are fewer accounts than twice the
workers, a share of one account's projections: every projection keeps its own checkpoint,
so one account's folds may run in different processes. Shares are balanced by each
projection's measured cost per event times the events it reads, the largest first; the
projections in :data:`TOGETHER` stay in one share (the state snapshots with the orders,
positions and wallets they share, the wallets with the ledger rows that explain them).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import queue
import signal
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

from recorder.config import DatabaseConfig
from recorder.projections.reading import BATCH
from recorder.projections.registry import FOLDS, Selection, selected
from recorder.projections.snapshots import STATE_PROJECTIONS, StateFold
from recorder.store.errors import StoreError

# Projections folded in one pass together: the state snapshots reuse these table folds, and
# a wallets batch with a ledger answer explains its reconciliations from the `ledgers` rows
# of the same transaction (explaining.py), which another process may not have written yet.
TOGETHER = (*STATE_PROJECTIONS, StateFold.name, "ledgers")
# What a fold costs per event it reads, relative (microseconds per event, each fold alone,
# 200,000-event benchmark log on SQLite; benchmarks/NOTES.md): to balance the shares of one
# account's projections. A wrong figure costs speed, never rows.
COST_PER_EVENT = {
    "orders": 31,
    "positions": 33,
    "wallets": 17,
    "funding_offers": 30,
    "funding_credits": 40,
    "funding_loans": 40,
    "trades": 18,
    "funding_trades": 40,
    "wallet_history": 26,
    "notifications": 38,
    "balance_info": 20,
    "margin_info": 20,
    "funding_info": 30,
    "fill_effects": 33,
    StateFold.name: 5,  # with the table folds it shares (22 alone)
}
DEFAULT_COST = 30
POLL_S = 0.5  # how often the parent looks at its workers while none reports


class Unit(NamedTuple):
    """What one worker folds at a time: some projections of one account."""

    account: str
    projections: tuple[str, ...]
    weight: int  # what its folds cost, estimated (COST_PER_EVENT x the events each reads)
    reads: int  # the events it reads (a progress bar's share)


class Plan(NamedTuple):
    units: list[Unit]  # the largest first
    events: int  # the events a one-process rebuild would fold (what the command reports)
    reads: int  # the events the units read in all (a progress bar's total)


class RebuildFailed(StoreError):
    """A worker could not fold its unit (the others were stopped; committed batches stay)."""


def plan(
    accounts: list[str],
    only: Selection,
    jobs: int,
    counts: Callable[[str], dict[str, int]],
) -> Plan:
    """The units of a rebuild over ``jobs`` workers. ``counts``: an account's events per
    kind (``EventLog.count_by_kind``)."""
    names = selected(only)
    kinds = {name: FOLDS[name]().kinds for name in names}
    split = len(accounts) < 2 * jobs and len(names) > 1
    units: list[Unit] = []
    events = 0
    for account in accounts:
        by_kind = counts(account)

        def reads(share: Iterable[str], by_kind: dict[str, int] = by_kind) -> int:
            return sum(by_kind.get(k, 0) for k in set().union(*(kinds[n] for n in share)))

        weight = {
            name: COST_PER_EVENT.get(name, DEFAULT_COST)
            * sum(by_kind.get(k, 0) for k in kinds[name])
            for name in names
        }
        events += reads(names)
        shares = _shares(names, weight, jobs) if split else [names]
        units += [Unit(account, s, sum(weight[n] for n in s), reads(s)) for s in shares]
    units.sort(key=lambda u: -u.weight)
    return Plan(units, events, sum(u.reads for u in units))


def _shares(names: tuple[str, ...], weight: dict[str, int], jobs: int) -> list[tuple[str, ...]]:
    """``names`` in at most ``jobs`` shares of about equal weight (the heaviest item first,
    each into the lightest share), each in registry order."""
    together = tuple(n for n in names if n in TOGETHER)
    items = [together] if together else []
    items += [(n,) for n in names if n not in TOGETHER]
    items.sort(key=lambda item: -sum(weight[n] for n in item))
    shares: list[list[str]] = [[] for _ in range(min(jobs, len(items)))]
    loads = [0] * len(shares)
    for item in items:
        lightest = loads.index(min(loads))
        shares[lightest].extend(item)
        loads[lightest] += sum(weight[n] for n in item)
    order = {n: i for i, n in enumerate(names)}
    return [tuple(sorted(share, key=order.__getitem__)) for share in shares if share]


def rebuild_parallel(
    db: DatabaseConfig,
    units: list[Unit],
    jobs: int,
    progress: Callable[[int], None] | None = None,
    batch: int = BATCH,
) -> int:
    """Fold ``units`` (their projections already cleared) in ``jobs`` worker processes;
    returns the events they read. Any exception here (a signal's included) stops every
    worker before it propagates: a worker's batch in flight rolls back."""
    ctx = multiprocessing.get_context("spawn")  # no forked copy of the parent's connections
    tasks: Any = ctx.Queue()
    reports: Any = ctx.Queue()
    for unit in units:
        tasks.put(unit)
    workers = [
        ctx.Process(target=_worker, args=(db, batch, tasks, reports), daemon=True)
        for _ in range(min(jobs, len(units)))
    ]
    for _ in workers:
        tasks.put(None)
    total = 0
    left = len(units)
    try:
        for w in workers:
            w.start()
        while left:
            try:
                report = reports.get(timeout=POLL_S)
            except queue.Empty:
                # A worker that died (killed, out of memory) took its unit with it.
                ended = [w.exitcode for w in workers if w.exitcode not in (None, 0)]
                if ended or not any(w.is_alive() for w in workers):
                    raise RebuildFailed(
                        f"{left} unit(s) of the rebuild were not folded: a worker process "
                        f"ended (exit codes {ended or [w.exitcode for w in workers]})"
                    ) from None
                continue
            what = report[0]
            if what == "folded":
                total += report[1]
                if progress is not None:
                    progress(report[1])
            elif what == "done":
                left -= 1
            else:
                unit, text = report[1], report[2]
                raise RebuildFailed(
                    f"rebuild of {unit.account} ({', '.join(unit.projections)}) failed: {text}"
                )
        for w in workers:
            w.join()
    finally:
        for w in workers:
            if w.is_alive():
                w.terminate()
        for w in workers:
            with contextlib.suppress(AssertionError):  # never started
                w.join()
        # Units a stopped rebuild never handed out may still fill the pipe: the queues'
        # feeder threads must not hold the interpreter's exit waiting for readers.
        for q in (tasks, reports):
            q.cancel_join_thread()
            q.close()
    return total


def _worker(db: DatabaseConfig, batch: int, tasks: Any, reports: Any) -> None:
    """One worker process: fold units until told to stop (``None``). Ctrl-C reaches the
    whole process group: the parent decides, and terminates its workers."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from recorder.collector import fewer_collections
    from recorder.projections.projector import AccountProjector
    from recorder.store.engine import create_engine

    parent = os.getppid()

    def orphaned() -> bool:
        """The parent is gone (killed): its leases went with it, so stop writing."""
        return os.getppid() != parent

    engine = create_engine(db)
    try:
        with fewer_collections():
            while True:
                try:
                    unit = tasks.get(timeout=POLL_S)
                except queue.Empty:
                    if orphaned():
                        return
                    continue
                if unit is None:
                    return
                try:
                    projector = AccountProjector(
                        engine, unit.account, batch=batch, only=unit.projections
                    )
                    while not orphaned() and (n := projector.step()) is not None:
                        reports.put(("folded", n))
                    if orphaned():
                        return
                except Exception as exc:  # reported to the parent, which stops the rest
                    reports.put(("failed", unit, f"{type(exc).__name__}: {exc}"))
                    return
                reports.put(("done", unit))
    finally:
        engine.dispose()
