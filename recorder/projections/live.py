"""Live projector tasks inside ``run`` and ``demo``: fold as the writer commits.

Kept apart from :mod:`recorder.projections.projector` (the synchronous folding and
persisting) so that commands which only read (``state``) need not import trio.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import trio

from recorder.logs import log_fields
from recorder.projections.projector import AccountProjector, Projector
from recorder.store.database import Database
from recorder.store.errors import StoreUnavailable

log = logging.getLogger(__name__)


COALESCE = 0.05  # seconds a woken projector waits for more commits before folding


async def run_live(
    db: Database,
    projector: AccountProjector | Projector,
    wait_beyond: Callable[[str, int, float], Any],
    limiter: trio.CapacityLimiter,
    coalesce: float = COALESCE,
) -> None:
    """Fold as the writer commits: never polls in a tight loop, wakes on the writer's
    high-water mark (and every few seconds regardless, for commits by other processes), then
    lets commits gather for ``coalesce`` seconds so that one transaction folds many."""
    delay = 0.1
    while True:
        try:
            n = await db.run(projector.step, limiter=limiter)
            delay = 0.1
        except StoreUnavailable as exc:
            log_fields(
                log,
                "projector waiting for the database",
                logging.WARNING,
                account=projector.account,
                error=str(exc),
            )
            await trio.sleep(delay)
            delay = min(delay * 2, 5.0)
            continue
        if n is None:
            await wait_beyond(projector.account, projector.checkpoint, 5.0)
            await trio.sleep(coalesce)
