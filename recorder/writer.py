"""The writer task: the one owner of appends to the event log.

Sessions send :class:`NewEvent` and :class:`SessionChange` items through a bounded trio
channel. The writer takes whatever has arrived (up to ``batch_max_frames`` items, waiting at
most ``batch_max_ms`` for more) and appends it in one transaction in a worker thread, so the
receive loops never wait on the database unless the channel is full (backpressure).

A failed batch is never dropped: the writer keeps it and retries with capped back-off until
the database takes it. A failure can hide a commit (the connection lost after the server got
``COMMIT`` but before its reply reached us), so before each retry the writer asks the log
whether the batch landed (``EventLog.landed``: the account's head equals the hash the batch
ends on) and retries only if the head is still where the batch starts: never a duplicate,
never a gap. While it retries, the channel fills and the sessions notice (they end
with ``database-unavailable`` after their bound, see upstream.session), but every frame already
read stays queued and is committed once the database returns.

After each commit the writer publishes the new high-water event id per account
(:meth:`wait_beyond`, :meth:`wait_any`), which is what projectors wait on instead of polling.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import trio

from recorder.config import WriterConfig
from recorder.logs import log_fields
from recorder.store.database import Database
from recorder.store.errors import StoreUnavailable
from recorder.store.eventlog import (
    AppendResult,
    ChainConflict,
    EventLog,
    NewEvent,
    SessionChange,
)

log = logging.getLogger(__name__)

Item = NewEvent | SessionChange
GATHER_POLL = 0.002  # seconds between looks at the queue while a batch fills
COMMITS_KEPT = 4096  # recent commits per account remembered for the projector lag in seconds
UNAVAILABLE_LOG_EVERY = 30.0  # seconds: one warning per interval while the database is away
# An intake at least this fast is a burst, in which the live projectors stand back (see
# ``Writer.behind``). The steady loads this daemon is built for are far below it (1,000
# accounts x 1 frame/s, 100 x 10: 1,000 frames/s); a reconnect's snapshots, a backlog the
# exchange flushes, a replayed firehose are above it.
BURST_FRAMES_PER_S = 5000.0
# Seconds without a commit, or a batch being appended, after which a burst is over (its last
# batch's rate no longer says anything about now).
BURST_QUIET = 0.1


@dataclass(frozen=True)
class Commit:
    """One committed batch, as the writer's observers hear of it (metrics, benchmarks)."""

    batch: list[Item]
    seconds: float  # from the batch's first try to its commit, retries included
    last_ids: dict[str, int]  # each account's last committed position
    at: float  # trio time of the commit


@dataclass
class WriterStats:
    """What the writer has done, kept in memory for metrics and the summary line (no
    database query needed to answer them)."""

    committed_events: int = 0
    batches: int = 0
    retries: int = 0
    by_kind: dict[tuple[str, str], int] = field(default_factory=dict)  # (account, kind)
    last_frame_at: dict[str, datetime] = field(default_factory=dict)  # chanId 0 frames
    commit_seconds: float = 0.0  # all batches' commit times, summed
    # (monotonic) since when the database has refused commits; None while it answers
    unavailable_since: float | None = None
    # (event id, monotonic time) of recent commits per account: how old a projector's lag is
    commits: dict[str, deque[tuple[int, float]]] = field(default_factory=dict)


class Writer:
    def __init__(self, db: Database, cfg: WriterConfig) -> None:
        self.db = db
        self.log = EventLog(db.engine)
        self.cfg = cfg
        self.send_channel, self._receive = trio.open_memory_channel[Item](cfg.queue_size)
        self.stats = WriterStats()
        self.high_water: dict[str, int] = {}
        self._hashes: dict[str, str] = {}
        # One event per account, set when that account's high-water mark moves: a projector
        # of one account is not woken by another account's commits.
        self._committed: dict[str, trio.Event] = {}
        self._any_commit = trio.Event()
        self.done = trio.Event()  # set when the queue is drained and the writer returned
        # One thread at a time: appends are serialized anyway, and order must be kept.
        self._limiter = trio.CapacityLimiter(1)
        # Told of every commit, after it (keep them cheap: they run on the writer's task).
        self.observers: list[Callable[[Commit], None]] = []
        # Accounts another process appends to (a ChainConflict): their items are no longer
        # appended, the other accounts' are; ``on_conflict`` hears of each (the daemon stops
        # that account alone).
        self.refused: set[str] = set()
        # Frames per second the last batch took in (its frames over the time since the
        # commit before it), and when it was committed (trio time).
        self._intake = 0.0
        self._last_commit_at = -math.inf
        self._committing = False  # a batch is being appended
        self.on_conflict: Callable[[tuple[str, ...], str], None] | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Append until every clone of :attr:`send_channel` is closed and the queue drained."""
        task_status.started()
        try:
            async with self._receive:
                while True:
                    try:
                        first = await self._receive.receive()
                    except trio.EndOfChannel:
                        return
                    batch = [first]
                    await self._gather(batch)
                    await self._commit(batch)
        finally:
            self.done.set()
            for waiting in self._committed.values():
                waiting.set()
            self._any_commit.set()

    async def _gather(self, batch: list[Item]) -> None:
        """Take what is queued; while the batch is not full, look again every couple of
        milliseconds until ``batch_max_ms`` has passed. (Waking once per item instead would
        cost a task switch per frame on the receive loop's thread.)"""
        deadline = trio.current_time() + self.cfg.batch_max_ms / 1000
        limit = self.cfg.batch_max_frames
        while len(batch) < limit:
            try:
                while len(batch) < limit:
                    batch.append(self._receive.receive_nowait())
            except trio.WouldBlock:
                pass
            except trio.EndOfChannel:
                return
            now = trio.current_time()
            if len(batch) >= limit or now >= deadline:
                return
            await trio.sleep(min(GATHER_POLL, deadline - now))

    def _without_refused(self, batch: list[Item]) -> list[Item]:
        return [i for i in batch if not (isinstance(i, NewEvent) and i.account in self.refused)]

    async def _commit(self, batch: list[Item]) -> None:
        """Append ``batch`` however long the database takes (it is never dropped), then
        account for it."""
        if self.refused:
            batch = self._without_refused(batch)
            if not batch:
                return
        began = trio.current_time()
        self._committing = True
        try:
            appended = await self._append(batch)
        finally:
            self._committing = False
        if appended is not None:
            self._committed_now(*appended, began)

    async def _append(self, batch: list[Item]) -> tuple[list[Item], AppendResult] | None:
        """Append until it lands: a transient error keeps the batch and retries (after an
        error whose outcome is unknown, asks first whether it landed); a chain conflict
        drops the accounts concerned. Returns what was appended (None: nothing was left)."""
        delay = 0.05
        outcome_unknown = False
        logged_at = -math.inf
        while True:
            try:
                await self._know_heads(batch)
                before = dict(self._hashes)
                if outcome_unknown:
                    landed = await self.db.run(
                        self.log.landed, batch, before, limiter=self._limiter
                    )
                    outcome_unknown = False
                    if landed is not None:
                        log_fields(log, "the batch had been committed", frames=len(batch))
                        result = landed
                        break
                result = await self.db.run(self.log.append, batch, before, limiter=self._limiter)
                break
            except ChainConflict as exc:
                # Only the accounts concerned stop; the batch's others are appended (whether
                # the batch landed is asked again for them).
                self.refused.update(exc.accounts)
                log_fields(log, str(exc), logging.ERROR, accounts=",".join(exc.accounts))
                if self.on_conflict is not None:
                    self.on_conflict(exc.accounts, str(exc))
                if not exc.accounts:
                    raise
                batch = self._without_refused(batch)
                if not batch:
                    return None
            except StoreUnavailable as exc:
                outcome_unknown = True  # it may have committed before the error
                self.stats.retries += 1
                now = trio.current_time()
                if self.stats.unavailable_since is None:
                    self.stats.unavailable_since = now
                if now - logged_at >= UNAVAILABLE_LOG_EVERY:
                    logged_at = now
                    log_fields(
                        log,
                        "database unavailable, batch kept for retry",
                        logging.WARNING,
                        error=str(exc),
                        frames=len(batch),
                        retries=self.stats.retries,
                    )
                # Shielded: a shutdown must not discard frames already read.
                with trio.CancelScope(shield=True):
                    await trio.sleep(delay)
                delay = min(delay * 2, 5.0)
        self.stats.unavailable_since = None
        if logged_at > -math.inf:
            log_fields(log, "database available again", frames=len(batch))
        return batch, result

    def _committed_now(self, batch: list[Item], result: AppendResult, began: float) -> None:
        """A batch committed: heads and high-water marks, counts, wake-ups, observers."""
        self._hashes.update(result.last_hashes)
        for acc, last in result.last_ids.items():
            self.high_water[acc] = last
        stats = self.stats
        stats.committed_events += result.count
        stats.batches += 1
        now = trio.current_time()
        self._intake = result.count / max(now - self._last_commit_at, 1e-3)
        self._last_commit_at = now
        stats.commit_seconds += now - began
        by_kind = stats.by_kind
        for item in batch:
            if isinstance(item, NewEvent):
                key = (item.account, item.kind)
                by_kind[key] = by_kind.get(key, 0) + 1
                if item.chan_id == 0:  # account frames (heartbeats included), not our pongs
                    stats.last_frame_at[item.account] = item.received_at
        for acc, last in result.last_ids.items():
            recent = stats.commits.setdefault(acc, deque(maxlen=COMMITS_KEPT))
            recent.append((last, now))
        for acc in result.last_ids:
            waiting = self._committed.pop(acc, None)
            if waiting is not None:
                waiting.set()
        self._any_commit.set()
        self._any_commit = trio.Event()
        if self.observers:
            commit = Commit(batch, now - began, dict(result.last_ids), now)
            for observe in self.observers:
                observe(commit)

    async def _know_heads(self, batch: list[Item]) -> None:
        """Read the chain head of accounts this writer has not appended to yet (the lease
        makes this writer the only one for them, so the head cannot move meanwhile)."""
        missing = {i.account for i in batch if isinstance(i, NewEvent)} - self._hashes.keys()
        if missing:
            self._hashes.update(
                await self.db.run(self.log.heads, sorted(missing), limiter=self._limiter)
            )

    @property
    def queue_depth(self) -> int:
        return self._receive.statistics().current_buffer_used

    def behind(self) -> bool:
        """Frames arrive faster than the projectors should compete with them for the
        interpreter (the live projectors stand back meanwhile, see ``live.stand_back``):
        more than a batch is waiting, or the last batch took frames in at
        :data:`BURST_FRAMES_PER_S` or faster and the burst goes on (that batch committed less
        than :data:`BURST_QUIET` ago, or the next one is being appended).

        The second is what a fast database needs: there the writer keeps its queue short,
        and a projection round slows the receive loops instead (the interpreter is shared),
        so the frames wait in the sockets, where the queue does not show them (PostgreSQL
        recorded a burst at half the rate with the projectors folding beside it)."""
        if self.done.is_set():
            return False
        if self.queue_depth > self.cfg.batch_max_frames:
            return True
        return self._intake >= BURST_FRAMES_PER_S and (
            self._committing or trio.current_time() - self._last_commit_at < BURST_QUIET
        )

    def lag_seconds(self, account: str, checkpoint: int) -> float:
        """How long ago the oldest commit a projector at ``checkpoint`` has not folded was
        made (0 when it is caught up)."""
        for event_id, at in self.stats.commits.get(account, ()):
            if event_id > checkpoint:
                return max(trio.current_time() - at, 0.0)
        return 0.0

    async def wait_any(self, timeout: float = math.inf) -> bool:
        """Wait for the next commit of any account; False on timeout."""
        with trio.move_on_after(timeout):
            await self._any_commit.wait()
            return True
        return False

    async def wait_beyond(self, account: str, event_id: int, timeout: float = math.inf) -> int:
        """Wait until ``account`` has committed events past ``event_id`` (or the timeout)."""
        with trio.move_on_after(timeout):
            while self.high_water.get(account, 0) <= event_id and not self.done.is_set():
                waiting = self._committed.get(account)
                if waiting is None:
                    waiting = self._committed[account] = trio.Event()
                await waiting.wait()
        return self.high_water.get(account, 0)
