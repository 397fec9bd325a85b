"""``rebuild``: clear projections and refold them from the whole log with the daemon's own
fold loop (:class:`~recorder.projections.projector.AccountProjector`): one pass per account,
each batch read and parsed once and fed to every projection that reads its kind, rows and
checkpoints written in one transaction per batch. So the result is the live fold's rows
(tests check rebuild == live).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import sqlalchemy as sa

from recorder.collector import fewer_collections
from recorder.projections.projector import AccountProjector
from recorder.projections.reading import BATCH
from recorder.projections.registry import FOLDS, make_folds
from recorder.projections.writing import clear_projection
from recorder.store.eventlog import EventLog


def rebuild(
    engine: sa.Engine,
    accounts: Iterable[str],
    only: str | None = None,
    progress: Callable[[int], None] | None = None,
    batch: int = BATCH,
) -> int:
    """Clear and refold projections (every one, or ``only``) from the whole log; returns
    log events folded. Committed batches stay if it is interrupted: the daemon folds on."""
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
    for account in accounts:
        for name in [only] if only is not None else FOLDS:
            clear_projection(engine, name, account)
        projector = AccountProjector(engine, account, batch=batch, only=only)
        while (n := projector.step()) is not None:
            total += n
            if progress:
                progress(n)
    return total


def rebuild_work(engine: sa.Engine, accounts: list[str], only: str | None) -> int:
    """Events a rebuild will fold (the kinds its projections read), for a progress bar."""
    kinds = {k for f in make_folds(only) for k in f.kinds}
    return EventLog(engine).count(accounts, kinds=kinds)
