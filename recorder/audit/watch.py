"""The hash chain verifies itself while the daemon runs.

Every ``[audit] verify_every_s`` the daemon, per account:

* recomputes the chain over the rows appended since the last verified position (cheap: only
  new rows, chained on from the verified row's hash);
* checks that the verified row still holds the hash it was verified with, and that the log's
  append-only triggers are still in place (an edit of an old row needs them dropped first:
  their absence is the alarm, within one interval);
* and once every ``full_every_s`` (a day) recomputes the whole chain from the first row,
  which finds an edited old row itself.

The outcome is kept in memory (:class:`ChainCheck`, read by the metrics:
``bfx_chain_verified_id``, ``bfx_chain_verify_failures``, ``bfx_chain_last_check_timestamp``)
and logged: a line per check, an ERROR naming the first bad row. It reads on its own
connections in a worker thread; the writer never waits for it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import sqlalchemy as sa
import trio

from recorder.audit.verify import walk_chain
from recorder.logs import log_fields
from recorder.store.database import Database
from recorder.store.errors import StoreUnavailable
from recorder.store.eventlog import EventLog
from recorder.store.hashchain import GENESIS
from recorder.store.schema import events

log = logging.getLogger(__name__)

FULL_EVERY_S = 86_400.0
SQLITE_TRIGGERS = frozenset({"events_no_update", "events_no_delete"})
POSTGRES_TRIGGERS = frozenset({"events_no_update_delete", "events_no_truncate"})


@dataclass
class ChainCheck:
    """One account's self-check, as the metrics and the log show it."""

    verified_id: int = 0
    verified_hash: str = GENESIS
    failures: int = 0  # checks that found something wrong
    broken_at: int | None = None  # the first bad row found, while it stays bad
    problem: str | None = None
    last_check_at: float | None = None  # wall-clock seconds
    last_full_at: float | None = None


def triggers_present(engine: sa.Engine) -> bool:
    """Whether the log's append-only triggers are in place."""
    with engine.connect() as conn:
        if conn.dialect.name == "sqlite":
            names = conn.exec_driver_sql(
                "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'events'"
            ).scalars()
            return set(names) >= SQLITE_TRIGGERS
        names = conn.exec_driver_sql(
            "SELECT tgname FROM pg_trigger WHERE tgrelid = 'events'::regclass AND NOT tgisinternal"
        ).scalars()
        return set(names) >= POSTGRES_TRIGGERS


def _stored_hash(engine: sa.Engine, event_id: int) -> str | None:
    with engine.connect() as conn:
        found = conn.execute(sa.select(events.c.hash).where(events.c.id == event_id)).scalar()
        return None if found is None else str(found)


def check_account(engine: sa.Engine, account: str, state: ChainCheck, full: bool) -> str | None:
    """One check (in a worker thread); updates ``state``; returns the problem found, if any."""
    if not triggers_present(engine):
        return "the log's append-only triggers are gone (rows can be changed)"
    if full:
        after, prev = 0, GENESIS
    elif state.verified_id and _stored_hash(engine, state.verified_id) != state.verified_hash:
        state.broken_at = state.verified_id
        return f"row {state.verified_id} no longer holds the hash it was verified with"
    else:
        after, prev = state.verified_id, state.verified_hash
    walk = walk_chain(EventLog(engine), account, after=after, prev=prev)
    if walk.bad is not None:
        state.broken_at = walk.bad
        if full:  # where the next incremental check goes on from: nowhere past the break
            state.verified_id, state.verified_hash = walk.last_id, walk.last_hash
        return f"row {walk.bad} does not follow the chain"
    state.verified_id, state.verified_hash = walk.last_id, walk.last_hash
    state.broken_at = None
    return None


class ChainWatch:
    """The daemon's task: each account checked every ``every_s``, fully every ``full_every_s``."""

    def __init__(
        self,
        db: Database,
        accounts: list[str],
        every_s: float,
        wall: Callable[[], float],
        full_every_s: float = FULL_EVERY_S,
    ) -> None:
        self.db = db
        self.every_s = every_s
        self.full_every_s = full_every_s
        self.wall = wall
        self.checks: dict[str, ChainCheck] = {a: ChainCheck() for a in accounts}
        self.rounds = 0
        self.checked = trio.Event()  # set after each round (tests wait on it)

    def add(self, account: str) -> None:
        """Check one more account from the next round on (taken over at run time)."""
        self.checks.setdefault(account, ChainCheck())

    async def run(self) -> None:
        while True:
            await self.round()
            await trio.sleep(self.every_s)

    async def round(self) -> None:
        for account, state in list(self.checks.items()):
            now = self.wall()
            full = state.last_full_at is None or now - state.last_full_at >= self.full_every_s
            try:
                problem = await self.db.run(check_account, self.db.engine, account, state, full)
            except StoreUnavailable:
                continue  # the database is away; the writer waits for it too
            state.last_check_at = now
            if full:
                state.last_full_at = now
            state.problem = problem
            if problem is None:
                log_fields(
                    log,
                    "chain verified",
                    account=account,
                    up_to=state.verified_id,
                    full=full,
                )
            else:
                state.failures += 1
                log_fields(
                    log,
                    f"chain check FAILED: {problem}",
                    logging.ERROR,
                    account=account,
                    verified_up_to=state.verified_id,
                    first_bad=state.broken_at,
                )
        self.rounds += 1
        self.checked.set()
        self.checked = trio.Event()
