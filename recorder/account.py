"""One account's life in one room: its sessions under supervision, the gap backfill after
each reconnect, the key's permission check, wall-clock step markers.

The daemon (:mod:`recorder.daemon`) composes one :class:`AccountRecorder` per configured
account and hands it what the process shares (:class:`AccountServices`: the database, the
key's nonces, the host's connection limit, the REST client, the clock watch). Everything it
logs goes through the writer's channel it is given; the socket's frames never wait on the
REST work, which starts only after the account's first auth.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import trio

from recorder.config import AccountConfig, Credentials
from recorder.logs import log_fields
from recorder.protocol.rest import (
    ENDPOINTS,
    WRITE_KEY_ALLOWED,
    write_key_end,
    write_key_refused,
    write_scopes,
)
from recorder.store import sessions as session_store
from recorder.store.backfills import Unfinished
from recorder.store.database import Database
from recorder.store.eventlog import NewEvent, marker
from recorder.upstream.backfill import LEDGER_ONLY, OVERLAP, Backfiller, Window, doubling
from recorder.upstream.backoff import Backoff, ConnectionRateLimit
from recorder.upstream.clock import ClockWatch
from recorder.upstream.connection import Connector
from recorder.upstream.nonces import PersistentNonces
from recorder.upstream.rest import RestClient, RestFailed
from recorder.upstream.session import Session, SessionOutcome, SessionParams
from recorder.upstream.supervisor import supervise
from recorder.writer import Item

log = logging.getLogger(__name__)


@dataclass
class AccountStatus:
    """One account as the daemon sees it, in memory (metrics, health, the summary line)."""

    name: str
    sessions: int = 0
    connected: bool = False
    last_reason: str | None = None
    stopped: SessionOutcome | None = None
    ends: dict[str, int] = field(default_factory=dict)  # session ends by reason
    disconnected_since: float | None = None  # trio time; None while connected
    # How long a disconnection may last and still count as "reconnecting" (back-off cap,
    # the connection limit's window, and the time a handshake may take).
    reconnect_allowance: float = 60.0

    def disconnected_for(self) -> float:
        if self.connected or self.disconnected_since is None:
            return 0.0
        return trio.current_time() - self.disconnected_since


RestClientFor = Callable[[Callable[[NewEvent], Awaitable[None]]], RestClient]


@dataclass(frozen=True)
class AccountServices:
    """What an account takes from the process it runs in."""

    db: Database
    nonces: PersistentNonces  # the key's (shared by every account of that key)
    rate_limit: ConnectionRateLimit  # the host's
    connector: Connector
    wall: Callable[[], datetime]
    clock: ClockWatch
    db_unavailable_timeout: float
    retry_every: float  # seconds before an incomplete window (or check) is tried again
    # seconds from a fill (``tu``) to asking for the ledger entries it booked
    ledger_after_fill: float
    rest_client: RestClientFor | None  # None: backfill off
    # Orders and positions the reconnect's snapshots no longer list, unexplained yet.
    vanished: Callable[[], Awaitable[dict[str, list[int]]]]


class AccountRecorder:
    def __init__(
        self,
        acc: AccountConfig,
        creds: Credentials,
        status: AccountStatus,
        services: AccountServices,
        *,
        stopped_at: datetime | None,
        unfinished: list[Unfinished],
        history_from: datetime | None = None,
    ) -> None:
        self.acc = acc
        self.status = status
        self.services = services
        self.params = SessionParams(
            account=acc.name,
            url=acc.url,
            api_key=creds.api_key,
            api_secret=creds.api_secret,
            filter=acc.filter,
            dms=acc.dms,
            heartbeat_period=acc.heartbeat_period_s,
            pong_timeout=min(10.0, acc.heartbeat_period_s),
            db_unavailable_timeout=services.db_unavailable_timeout,
            allow_write_key=acc.allow_write_key,
            max_frame_bytes=acc.max_frame_bytes,
        )
        self.unfinished = unfinished
        self.history_from = history_from  # the initial window still to ask for, from when
        self.last_frame = stopped_at  # where the record stopped: the next gap starts there
        self.gap_began = trio.current_time()  # trio time the current gap began
        self.first = True
        self.first_auth = trio.Event()
        self.session: Session | None = None
        self.scope = trio.CancelScope()  # cancelled: the account stops
        self.backfiller: Backfiller | None = None
        self._sink: trio.MemorySendChannel[Item] | None = None
        self.filled = trio.Event()  # set by the session on a fill (tu): fetch the ledger soon

    def stop(self, reason: str | None = None) -> None:
        """Stop this account; frames already recorded are kept. ``reason``: it stopped for
        good (its status says so, and its session ends for that reason); without one (its
        lease lost) the session ends as at a shutdown."""
        if reason is not None:
            self.status.stopped = SessionOutcome(reason=reason, final=True)
            if self.session is not None:
                self.session.end(reason, final=True)
        self.scope.cancel()

    def refuse(self, scopes: list[str]) -> None:
        """The key can write: stop this account."""
        account = self.acc.name
        log_fields(log, write_key_refused(account, scopes), logging.ERROR, account=account)
        self.stop(write_key_end(scopes))

    async def run(self, sink: trio.MemorySendChannel[Item]) -> None:
        """Record until the account stops (a final error, :meth:`stop`) or is cancelled."""
        status, services = self.status, self.services
        status.disconnected_since = trio.current_time()
        self._sink = sink
        async with sink, trio.open_nursery() as helpers:
            helpers.start_soon(self._mark_clock_steps, sink)
            if services.rest_client is not None:
                client = services.rest_client(sink.send)
                self.backfiller = Backfiller(client, sink.send, retry_every=services.retry_every)
                await helpers.start(self.backfiller.run)
                helpers.start_soon(self._check_permissions, services.rest_client(sink.send))
                if self.acc.ledger_every_s:
                    helpers.start_soon(self._poll_ledger, self.backfiller)
            with self.scope:
                status.stopped = await supervise(
                    self.acc.name,
                    self._make_session,
                    backoff=Backoff(cap=self.acc.backoff_cap_s),
                    rate_limit=services.rate_limit,
                )
            status.connected = False
            helpers.cancel_scope.cancel()

    # --- one session after another ------------------------------------------------------------

    def _make_session(self) -> Session:
        assert self._sink is not None
        self.status.sessions += 1
        nonces = self.services.nonces
        self.session = Session(
            self.params,
            sink=self._sink,
            open_session=self._open_session,
            next_nonce=nonces.next,
            connector=self.services.connector,
            on_connected=self._connected,
            on_authenticated=self._authenticated,
            on_end=self._ended,
            on_fill=self.filled_now,
            key_lock=nonces.key_lock,
            now=self.services.wall,
        )
        return self.session

    async def _open_session(self, account: str, url: str, at: datetime) -> int:
        db = self.services.db
        return await db.run(session_store.open_session, db.engine, account, url, at)

    def _connected(self) -> None:
        self.status.connected = True
        self.status.disconnected_since = None

    def _authenticated(self, session_id: int, at: datetime, snapshots_in: trio.Event) -> None:
        reason = "restart" if self.first else "reconnect"
        backfiller = self.backfiller
        if self.first and backfiller is not None:
            # What a previous run left unfinished, first (REST starts only now: the first
            # connect never competes with it).
            for left in self.unfinished:
                backfiller.request(
                    Window(
                        left.window_from,
                        left.window_to,
                        left.reason,
                        left.session_id,
                        endpoints=LEDGER_ONLY if left.reason == "ledger" else None,
                    )
                )
            if self.history_from is not None:
                backfiller.request(Window(self.history_from, at + OVERLAP, "initial"))
        self.first = False
        self.first_auth.set()
        if backfiller is not None and self.last_frame is not None:
            # A wall-clock step during the gap: widen by it, either way, so the window still
            # covers the gap in the exchange's time.
            step = timedelta(seconds=self.services.clock.stepped_since(self.gap_began))
            start, end = self.last_frame - OVERLAP - step, at + OVERLAP + step
            vanished = self.services.vanished
            backfiller.request(Window(start, end, reason, session_id, snapshots_in, vanished))

    def filled_now(self) -> None:
        self.filled.set()

    def _ended(self, outcome: SessionOutcome) -> None:
        """Every session end, shutdown included (the supervisor does not see those)."""
        status = self.status
        status.connected = False
        status.disconnected_since = trio.current_time()
        status.last_reason = outcome.reason
        status.ends[outcome.reason] = status.ends.get(outcome.reason, 0) + 1
        self.gap_began = trio.current_time()
        if outcome.last_frame_at is not None:
            self.last_frame = outcome.last_frame_at

    # --- beside the sessions --------------------------------------------------------------------

    async def _check_permissions(self, client: RestClient) -> None:
        """Ask ``auth/r/permissions`` after the account's first auth, beside its session (the
        answer goes into the log through the writer like any other), and refuse a key that
        can write unless ``allow_write_key``. REST unreachable: a warning, and the check is
        tried again with the backfill's back-off (doubling up to an hour) while recording
        goes on."""
        await self.first_auth.wait()
        failed = 0
        while True:
            try:
                answer = await client.call(ENDPOINTS["permissions"], {})
                break
            except RestFailed as exc:
                failed += 1
                delay = doubling(self.services.retry_every, failed)
                log_fields(
                    log,
                    "could not check the key's permissions over REST; recording goes on (the "
                    "WebSocket caps are checked on every auth)",
                    logging.WARNING,
                    account=self.acc.name,
                    error=str(exc)[:200],
                    retry_in=round(delay, 1),
                )
                await trio.sleep(delay)
        scopes = write_scopes(answer.rows)
        if scopes and not self.acc.allow_write_key:
            self.refuse(scopes)
        elif scopes:
            scopes_text = ",".join(scopes)
            log_fields(
                log, WRITE_KEY_ALLOWED, logging.WARNING, account=self.acc.name, scopes=scopes_text
            )

    async def _poll_ledger(self, backfiller: Backfiller) -> None:
        """While the account records, ask for its new ledger entries every
        ``ledger_every_s`` (a ledger-only window of reason ``ledger``, from where the last one
        ended less the overlap), so that the ledger is complete, not only around gaps: the
        balance proofs chain every entry; and ``ledger_after_fill`` (30 s) after a fill, so
        that a fill's entries are in the record minutes, not an interval, later (at most one
        request per ``ledger_after_fill``: within the endpoint's 90 a minute). Queued behind
        any gap window; a REST failure is retried like any window."""
        await self.first_auth.wait()
        since = self.services.wall() - OVERLAP
        after_fill = min(self.services.ledger_after_fill, self.acc.ledger_every_s)
        while True:
            with trio.move_on_after(self.acc.ledger_every_s):
                await self.filled.wait()
                # Soon after a fill (its entries are booked within seconds), not at once: the
                # fills of a burst share one request.
                await trio.sleep(after_fill)
            self.filled = trio.Event()
            now = self.services.wall()
            backfiller.request(Window(since, now, "ledger", endpoints=LEDGER_ONLY))
            since = now - OVERLAP

    async def _mark_clock_steps(self, sink: trio.MemorySendChannel[Item]) -> None:
        """A ``recorder.clock-step`` marker in the account's log for each wall-clock step."""
        clock, account = self.services.clock, self.acc.name
        seen = clock.found
        while True:
            await clock.changed.wait()
            new = clock.found - seen
            seen = clock.found
            for step in clock.steps[-new:] if new else []:
                fields = {
                    "seconds": round(step.seconds, 3),
                    "wall_before": datetime.fromtimestamp(step.wall_before, UTC).isoformat(),
                    "wall_after": datetime.fromtimestamp(step.wall_after, UTC).isoformat(),
                }
                log_fields(
                    log, "the wall clock stepped", logging.WARNING, account=account, **fields
                )
                wall = self.services.wall()
                await sink.send(marker(account, None, wall, "recorder.clock-step", fields))
