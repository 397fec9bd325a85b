"""``rebuild``: clear projections and refold them from the whole log, in one pass per account
(each batch read and parsed once, fed to every projection that reads its kind), rows and
checkpoints written in one transaction per batch. The folds are the live projectors', so the
result is the same rows (tests check rebuild == live).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import sqlalchemy as sa

from recorder.collector import fewer_collections
from recorder.projections.base import Fold, Output
from recorder.projections.reading import BATCH, read_events
from recorder.projections.registry import make_folds, one_pass_folds
from recorder.projections.writing import clear_projection, write_checkpoints, write_output
from recorder.store.errors import store_errors
from recorder.store.eventlog import EventLog


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
        folds = one_pass_folds(only)
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
