"""``rebuild``: clear projections and refold them from the whole log with the daemon's own
fold loop (:class:`~recorder.projections.projector.AccountProjector`): one pass per account,
each batch read and parsed once and fed to every projection that reads its kind, rows and
checkpoints written in one transaction per batch. So the result is the live fold's rows
(tests check rebuild == live). With ``jobs`` > 1 the same loop runs in worker processes
(:mod:`recorder.projections.parallel`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import sqlalchemy as sa

from recorder.collector import fewer_collections
from recorder.config import DatabaseConfig
from recorder.projections.parallel import Plan, plan, rebuild_parallel
from recorder.projections.projector import AccountProjector
from recorder.projections.reading import BATCH
from recorder.projections.registry import Selection, make_folds, selected
from recorder.projections.writing import clear_projection
from recorder.store.eventlog import EventLog


def rebuild(
    engine: sa.Engine,
    accounts: Iterable[str],
    only: Selection = None,
    progress: Callable[[int], None] | None = None,
    batch: int = BATCH,
    *,
    jobs: int = 1,
    db: DatabaseConfig | None = None,
    work: Plan | None = None,
) -> int:
    """Clear and refold projections (every one, or ``only``) from the whole log; returns
    log events folded. Committed batches stay if it is interrupted: the daemon folds on.
    ``jobs`` > 1: in that many worker processes, each opening ``db`` (the engine's own
    configuration; ``progress`` then counts the events each worker reads), by ``work``
    when the caller has the plan already (:func:`rebuild_plan`)."""
    accounts = list(accounts)
    if jobs > 1:
        if db is None:
            raise ValueError("a rebuild in worker processes needs the database configuration")
        work = work or rebuild_plan(engine, accounts, only, jobs)
        _clear(engine, accounts, only)
        rebuild_parallel(db, work.units, jobs, progress, batch)
        return work.events
    with fewer_collections():
        return _rebuild(engine, accounts, only, progress, batch)


def _clear(engine: sa.Engine, accounts: list[str], only: Selection) -> None:
    for account in accounts:
        for name in selected(only):
            clear_projection(engine, name, account)


def _rebuild(
    engine: sa.Engine,
    accounts: list[str],
    only: Selection,
    progress: Callable[[int], None] | None,
    batch: int,
) -> int:
    total = 0
    for account in accounts:
        _clear(engine, [account], only)
        projector = AccountProjector(engine, account, batch=batch, only=only)
        while (n := projector.step()) is not None:
            total += n
            if progress:
                progress(n)
    return total


def rebuild_plan(engine: sa.Engine, accounts: list[str], only: Selection, jobs: int) -> Plan:
    """How a rebuild over ``jobs`` processes divides its work (``Plan.reads``: the events
    its workers will read, for a progress bar)."""
    log = EventLog(engine)
    return plan(accounts, only, jobs, log.count_by_kind)


def rebuild_work(engine: sa.Engine, accounts: list[str], only: Selection) -> int:
    """Events a rebuild will fold (the kinds its projections read), for a progress bar."""
    kinds = {k for f in make_folds(only) for k in f.kinds}
    return EventLog(engine).count(accounts, kinds=kinds)
