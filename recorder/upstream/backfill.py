"""The gap backfill: what a disconnect (or the daemon's own downtime) hid, fetched from REST
history into the log (contract.md "REST gap backfill", rest.md §3).

One task per account takes windows in order (after every reconnect, at start-up, or on
demand) and pages each history endpoint through the window completely
(:class:`~recorder.protocol.rest.WindowPager`), then asks the current state endpoints, whose
answers explain what the reconnect's snapshots revealed. A window is bracketed by
``recorder.backfill-start`` and ``recorder.backfill-end`` markers; an incomplete one (REST down,
rate-limited past the retries, a page that cannot progress) ends with ``complete: false`` and is
tried again after ``retry_every``, doubling up to an hour, until it completes; a retry asks
only what failed (the endpoint, from the page where it stopped). It never blocks the receive
loop or the writer: it only adds events to the writer's queue like a session does.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import trio

from recorder.logs import log_fields
from recorder.protocol.rest import (
    ENDPOINTS,
    STATE_ENDPOINTS,
    WINDOW_ENDPOINTS,
    PagingStuck,
    WindowPager,
)
from recorder.store.eventlog import NewEvent, marker
from recorder.upstream.rest import RestClient, RestFailed

log = logging.getLogger(__name__)

OVERLAP = timedelta(minutes=2)  # clock skew and late indexing on both ends (rest.md §3.1)
SNAPSHOT_WAIT = 30.0  # seconds to wait for the snapshots before asking for current state
END_MARKER_GRACE = 5.0  # seconds a stop may wait to hand over a window's end marker
COMPLETED_KEPT = 100  # finished windows remembered (for tests and inspection)


@dataclass(frozen=True)
class Window:
    start: datetime
    end: datetime
    reason: str  # "reconnect" | "restart" | "manual" | "initial" | "ledger" (ledger only)
    session_id: int | None = None
    # Set when the new session's snapshots are in the log: only then is the current state
    # asked for (its answers explain what the snapshots revealed).
    snapshots_in: trio.Event | None = None
    # Then: the ids of orders and positions that vanished from the new snapshots and no
    # answer explains yet ({"orders": [...], "positions": [...]}): asked for by id, since
    # the window's time filter may not cover them (rest.md §3.2, §3.5).
    vanished: Callable[[], Awaitable[dict[str, list[int]]]] | None = None
    # The history endpoints to page (None: all of WINDOW_ENDPOINTS).
    endpoints: tuple[str, ...] | None = None


LEDGER_ONLY = ("ledgers-hist",)  # the windows that keep the ledger complete while connected

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ONE_MS = timedelta(milliseconds=1)


def ms(t: datetime, *, ceil: bool = False) -> int:
    """Milliseconds since the epoch, exactly (no float rounding); ``ceil`` for a window's
    end, so that its last partial millisecond is included."""
    whole, rest = divmod(t - EPOCH, ONE_MS)
    return whole + (1 if ceil and rest else 0)


@dataclass
class Progress:
    """What of a window is done, kept across its retries, so that a retry asks again only
    what failed (the endpoint, from the page where it stopped), never the pages already
    answered (30,000-row pages fetched again every minute grew the database 213 MB in
    150 s)."""

    pagers: dict[str, WindowPager] = field(default_factory=dict)
    state_done: set[str] = field(default_factory=set)
    vanished_done: bool = False
    attempts: int = 0


RETRY_LONGEST = 3600.0  # seconds: an incomplete window's back-off doubles up to this


def doubling(first: float, attempts: int) -> float:
    """The wait after ``attempts`` failed tries: ``first``, doubling up to an hour (an
    incomplete window's retries, the key's permission check)."""
    return min(first * 2 ** max(attempts - 1, 0), RETRY_LONGEST)


class Backfiller:
    def __init__(
        self,
        client: RestClient,
        emit: Callable[[NewEvent], Awaitable[None]],
        *,
        retry_every: float = 60.0,
        page_limits: dict[str, int] | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.client = client
        # Page sizes other than the documented maxima (a server that pages smaller; tests).
        self.page_limits = page_limits or {}
        self.emit = emit
        self.retry_every = retry_every
        self.now = now
        self._send, self._receive = trio.open_memory_channel[Window](math.inf)
        # The latest windows done (a daemon reconnects for months: a list of all would grow
        # by one per disconnect), and how many there have been.
        self.completed: deque[Window] = deque(maxlen=COMPLETED_KEPT)
        self.completed_count = 0
        self.incomplete: list[Window] = []
        self.idle = trio.Event()  # set while nothing is queued or running
        self.idle.set()
        self.running = False
        self._progress: dict[Window, Progress] = {}
        # (monotonic) when each window still incomplete first failed (alerts: an hour)
        self.incomplete_since: dict[Window, float] = {}

    @property
    def open_windows(self) -> int:
        """Windows queued, running or waiting to be retried."""
        queued = self._receive.statistics().current_buffer_used
        return queued + len(self.incomplete) + (1 if self.running else 0)

    @property
    def oldest_incomplete_s(self) -> float:
        """Seconds since the oldest window still incomplete first failed (0: none)."""
        if not self.incomplete_since:
            return 0.0
        return trio.current_time() - min(self.incomplete_since.values())

    def request(self, window: Window) -> None:
        self.idle = trio.Event()
        self._send.send_nowait(window)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        async with trio.open_nursery() as nursery:
            async for window in self._receive:
                self.running = True
                complete = await self.backfill(window)
                self.running = False
                if complete:
                    self._progress.pop(window, None)
                    self.incomplete_since.pop(window, None)
                    self.completed.append(window)
                    self.completed_count += 1
                else:
                    self.incomplete.append(window)
                    self.incomplete_since.setdefault(window, trio.current_time())
                    nursery.start_soon(self._retry_later, window)
                if self._receive.statistics().current_buffer_used == 0 and not self.incomplete:
                    self.idle.set()

    def retry_delay(self, window: Window) -> float:
        """``retry_every`` after the first failure, doubling up to an hour."""
        attempts = self._progress[window].attempts if window in self._progress else 1
        return doubling(self.retry_every, attempts)

    async def _retry_later(self, window: Window) -> None:
        await trio.sleep(self.retry_delay(window))
        self.incomplete.remove(window)
        self.request(window)

    async def _fetch(self, window: Window, rows: list[int]) -> None:
        """Page every history endpoint through the window, then (after a reconnect) the
        current state, counting the rows answered into ``rows[0]`` (also when it fails
        part-way). Raises RestFailed / PagingStuck."""
        client = self.client
        progress = self._progress.setdefault(window, Progress())
        progress.attempts += 1
        for name in window.endpoints or WINDOW_ENDPOINTS:
            pager = progress.pagers.get(name)
            if pager is None:
                endpoint = ENDPOINTS[name]
                if name in self.page_limits:
                    endpoint = replace(endpoint, limit=self.page_limits[name])
                pager = WindowPager(endpoint, ms(window.start), ms(window.end, ceil=True))
                progress.pagers[name] = pager
            while not pager.done:  # a retry goes on from the page where it stopped
                answer = await client.call(pager.endpoint, pager.request())
                rows[0] += len(answer.rows)
                pager.receive(answer.rows)
        if window.snapshots_in is not None:
            with trio.move_on_after(SNAPSHOT_WAIT):
                await window.snapshots_in.wait()
            for name in STATE_ENDPOINTS:
                if name not in progress.state_done:
                    rows[0] += len((await client.call(ENDPOINTS[name], {})).rows)
                    progress.state_done.add(name)
        if window.vanished is not None and not progress.vanished_done:
            ids = await window.vanished()
            for name, key in (("orders-hist", "orders"), ("positions-audit", "positions")):
                if ids.get(key):
                    endpoint = ENDPOINTS[name]
                    params = {"id": ids[key], "limit": endpoint.limit}
                    rows[0] += len((await client.call(endpoint, params)).rows)
            progress.vanished_done = True

    def _marker(self, kind: str, fields: dict[str, Any], session_id: int | None) -> NewEvent:
        return marker(self.client.account, session_id, self.now(), kind, fields)

    async def backfill(self, window: Window) -> bool:
        """Fetch one window; True when every request was answered."""
        client = self.client
        client.session_id = window.session_id
        span = {"window_from": window.start.isoformat(), "window_to": window.end.isoformat()}
        start = {**span, "reason": window.reason, "session_id": window.session_id}
        await self.emit(self._marker("recorder.backfill-start", start, window.session_id))
        before = client.requests
        counted, complete, why = [0], False, "stopped before it finished"
        log_fields(
            log,
            "backfill start",
            account=client.account,
            reason=window.reason,
            window_from=span["window_from"],
            window_to=span["window_to"],
        )
        try:
            await self._fetch(window, counted)
            complete, why = True, ""
        except (RestFailed, PagingStuck) as exc:
            why = str(exc)
        finally:
            # Also when cancelled (a stop): the window is marked incomplete, so the next
            # start resumes it. Shielded and bounded: the writer is still taking items.
            requests, rows = client.requests - before, counted[0]
            end = {**span, "complete": complete, "requests": requests, "rows": rows}
            with trio.CancelScope(shield=True), trio.move_on_after(END_MARKER_GRACE):
                await self.emit(self._marker("recorder.backfill-end", end, window.session_id))
            log_fields(
                log,
                "backfill end" if complete else "backfill incomplete, will retry",
                logging.INFO if complete else logging.WARNING,
                account=client.account,
                requests=requests,
                rows=rows,
                why=why[:200] or None,
            )
        return complete
