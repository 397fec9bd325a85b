"""The live projection task inside ``run`` and ``demo``: fold as the writer commits.

Kept apart from :mod:`recorder.projections.projector` (the synchronous folding and
persisting) so that commands which only read (``state``) need not import trio.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

import trio

from recorder.logs import log_fields
from recorder.projections.projector import ProjectionPool
from recorder.store.database import Database
from recorder.store.errors import StoreUnavailable

log = logging.getLogger(__name__)


COALESCE = 0.05  # seconds a woken projector waits for more commits before folding
# Account folds a second the pool aims at, at most: a round's cost is mostly per account
# (its read, its rows, its checkpoints), so with many accounts each waits longer and folds
# more frames at once (100 accounts: every 0.5 s; up to 20 accounts: every 0.05 s).
FOLDS_PER_SECOND = 200.0


ACCOUNTS_PER_TRANSACTION = 10
FALLBACK = 5.0  # seconds: without a commit of our own, look anyway (other processes append)
# Seconds the projectors stand back, at most, while the writer is behind (see stand_back):
# under a sustained overload they still fold a round this often.
STAND_BACK_LONGEST = 5.0
# Seconds between looks while standing back, commits or not (a burst can end with its last
# commit: then no commit tells the projectors).
RECHECK = 0.1
FAIL_BACKOFF_FIRST = 1.0  # seconds before a failed projection round is tried again...
FAIL_BACKOFF_CAP = 60.0  # ...doubling up to this


async def stand_back(
    behind: Callable[[], bool], wait_any: Callable[[float], Any], longest: float
) -> bool:
    """While ``behind()`` (a burst: the writer has more than a batch queued, or takes frames
    in faster than steady loads come, see ``Writer.behind``), wait for the writer's commits
    instead of folding, for at most ``longest`` seconds; whether it waited.

    Why: the receive loops, the writer and the projectors share one interpreter. In a burst
    a projection round holds it for tens of milliseconds while frames queue up in memory
    (up to ``writer.queue_size``) and in the socket. The log is what must keep up with the
    exchange; the projections are derived from it and catch up once the backlog is
    committed (at least every ``longest`` seconds meanwhile). At steady rates the writer
    is never a batch behind, and nothing waits."""
    if not behind():
        return False
    deadline = trio.current_time() + longest
    while behind() and (left := deadline - trio.current_time()) > 0:
        await wait_any(min(left, RECHECK))
    return True


async def fold_round(
    db: Database,
    pool: ProjectionPool,
    due: list[str],
    marks: dict[str, int] | None,
    limiter: trio.CapacityLimiter,
) -> bool:
    """Fold the ``due`` accounts, a few per transaction (on SQLite a fold transaction holds
    the one write lock while it writes, and the writer's next commit waits for it); whether
    a page was full (more is waiting)."""
    backlog = False
    for i in range(0, len(due), ACCOUNTS_PER_TRANSACTION):
        part = due[i : i + ACCOUNTS_PER_TRANSACTION]
        _, full = await db.run(pool.step, part, marks, limiter=limiter)
        backlog = backlog or full
    return backlog


async def round_failed(pool: ProjectionPool, exc: Exception, retry_in: float) -> None:
    """Report a failed round (the traceback once per distinct error), then wait."""
    failing = f"{type(exc).__name__}: {exc}"[:300]
    if failing != pool.failing:
        log.error("projection round failed; recording goes on", exc_info=exc)
    pool.failing = failing
    pool.failures += 1
    log_fields(
        log,
        "projections failing, retrying",
        logging.ERROR,
        error=failing,
        retry_in=round(retry_in, 1),
    )
    await trio.sleep(retry_in)


def behind_marks(pool: ProjectionPool, marks: dict[str, int]) -> list[str]:
    """The accounts whose projections have not folded up to ``marks``."""
    return [a for a, p in pool.projectors.items() if marks.get(a, 0) > p.checkpoint]


def gather_for(coalesce: float, accounts: int) -> float:
    """How long commits may gather before a round: a round folds several frames per
    account (its cost is mostly per account, not per frame: 100 accounts at 10 frames/s must
    not mean a round per frame)."""
    return max(coalesce, accounts / FOLDS_PER_SECOND)


def round_done(pool: ProjectionPool, on_round: Callable[[], None] | None) -> None:
    """A round folded without error: failing no more, and whoever waits is told."""
    if pool.failing is not None:
        log_fields(log, "projections folding again", previous_error=pool.failing)
        pool.failing = None
    if on_round is not None:
        on_round()


async def database_away(exc: StoreUnavailable, retry_in: float) -> None:
    log_fields(log, "projectors waiting for the database", logging.WARNING, error=str(exc))
    await trio.sleep(retry_in)


async def run_pool(
    db: Database,
    pool: ProjectionPool,
    high_water: dict[str, int],
    wait_any: Callable[[float], Any],
    limiter: trio.CapacityLimiter,
    coalesce: float = COALESCE,
    writer_behind: Callable[[], bool] | None = None,
    on_round: Callable[[], None] | None = None,
) -> None:
    """Fold every account of this process from one task: after the writer commits, let
    commits gather for ``coalesce`` seconds (longer with many accounts: see
    :data:`FOLDS_PER_SECOND`), then fold every account with new events, a few accounts per
    transaction (and every account every few seconds, for commits by other processes).
    ``writer_behind``: while it says so, no round starts (see :func:`stand_back`).
    ``on_round``: told after every round that folded without error (what waits for the
    projections to fold waits on it). ``marks``: after our writer's commits its marks say
    what is committed (no query needed); on a look without a commit of our own (start,
    fallback: None) the log's marks are read."""
    delay, fail_delay = 0.1, FAIL_BACKOFF_FIRST
    due = list(pool.projectors)
    gather = gather_for(coalesce, len(due))
    marks: dict[str, int] | None = None
    due_for = functools.partial(behind_marks, pool)
    while True:
        if writer_behind is not None and await stand_back(
            writer_behind, wait_any, STAND_BACK_LONGEST
        ):
            pool.stood_back += 1
            if marks is not None:  # more has been committed meanwhile: fold up to it
                marks = dict(high_water)
                due = due_for(marks)
        try:
            backlog = await fold_round(db, pool, due, marks, limiter)
            delay = 0.1
        except StoreUnavailable as exc:
            await database_away(exc, delay)
            delay = min(delay * 2, 5.0)
            continue
        except Exception as exc:
            # Whatever else makes a fold fail (a defect, a row the guard did not foresee),
            # the projections stand still and report it; the sessions and the writer go on
            # recording, and the round is tried again with back-off (its transaction rolled
            # back, the folds' state reloaded from their checkpoints).
            await round_failed(pool, exc, fail_delay)
            fail_delay = min(fail_delay * 2, FAIL_BACKOFF_CAP)
            continue
        round_done(pool, on_round)
        fail_delay = FAIL_BACKOFF_FIRST
        marks = dict(high_water)
        due = due_for(marks)
        if due and backlog:
            continue  # a full page left more to fold: catching up, no pause
        if due or await wait_any(FALLBACK):
            await trio.sleep(gather)  # commits arrived: let more gather (see gather_for)
            marks = dict(high_water)
            due = due_for(marks)
        else:
            marks = None
            due = list(pool.projectors)  # accounts taken over at run time too
