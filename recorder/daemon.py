"""The composition root: metrics, one writer, one :class:`~recorder.account.AccountRecorder`
per account, the live projections, graceful shutdown.

Lifetimes nest so that nothing already read can be lost on shutdown::

    writer (drains its channel, then returns)
      └── accounts nursery (one AccountRecorder per account; cancelled by stop())
            └── sessions: on cancellation they send their last frames, a
                recorder.disconnected marker and end_reason='shutdown' under a shielded,
                bounded scope, then close their clone of the writer's channel

When every clone is closed the writer commits what is queued and returns. ``stop()`` is
answered in every phase: start-up (reading where each record stopped) is cancelled, and
accounts that have not started never start.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from urllib.parse import urlsplit

import httpx
import trio

from recorder import health
from recorder.account import AccountRecorder, AccountServices, AccountStatus
from recorder.audit.watch import ChainWatch
from recorder.collector import fewer_collections
from recorder.config import AccountConfig, Config, Credentials
from recorder.groups import leaves
from recorder.logs import log_fields
from recorder.metrics import MetricsApp, serve_metrics
from recorder.projections.live import run_pool
from recorder.projections.projector import AccountProjector, ProjectionPool, ProjectionView
from recorder.store import backfills as backfill_store
from recorder.store.database import Database
from recorder.store.errors import StoreError, StoreUnavailable
from recorder.store.eventlog import EventLog, NewEvent
from recorder.store.lease import Lease
from recorder.store.reconciliations import unexplained_vanished
from recorder.upstream.backfill import Backfiller
from recorder.upstream.backoff import ConnectionRateLimit
from recorder.upstream.clock import ClockWatch
from recorder.upstream.connection import Connector, connect
from recorder.upstream.nonces import PersistentNonces
from recorder.upstream.rest import RestClient
from recorder.upstream.session import SessionOutcome
from recorder.writer import Item, Writer

log = logging.getLogger(__name__)

SHUTDOWN_CATCH_UP = 60.0  # seconds the projectors may fold at shutdown, after the drain


class MetricsUnusable(Exception):
    """The ``[metrics] listen`` address cannot be served (in use, not this machine's)."""

    def __init__(self, error: OSError) -> None:
        super().__init__(str(error))
        self.error = error


BACKFILL_RETRY_EVERY = 60.0  # seconds before an incomplete window (or check) is tried again
LEDGER_AFTER_FILL = 30.0  # seconds from a fill to asking for the ledger entries it booked
# rest_options taken by the account, not by its REST client
ACCOUNT_REST_OPTIONS = frozenset({"retry_every", "ledger_after_fill"})

VANISHING = ("orders", "positions")  # projections whose vanished entities REST is asked for
VANISHED_WAIT = 30.0  # seconds to wait for the projectors before reading reconciliations
EXIT_USAGE = 2  # a configuration the recorder refuses (a key that can write)
LEASE_CHECK_EVERY = 5.0  # seconds between checks that this process still holds its leases
# ``run --max-accounts``: leases taken at start and per check, at most. As many as the
# exchange lets one address connect in a window (5 per 15 s): more would only queue here
# while another process, with its own address, could connect them; and processes started
# together share the fleet instead of the first ones taking it all.
LEASES_PER_ROUND = 5
HEAD_LOG_EVERY = 600.0  # seconds between "chain head" log lines


class Recorder:
    def __init__(
        self,
        cfg: Config,
        accounts: list[tuple[AccountConfig, Credentials]],
        db: Database,
        *,
        connector: Connector = connect,
        connection_limit: tuple[int, float] = (5, 15.0),
        nonce_clock: Callable[[], float] = time.time,
        project: bool = True,
        leases: list[Lease] | None = None,
        waiting: list[tuple[AccountConfig, Credentials, Lease]] | None = None,
        max_accounts: int | None = None,
        lease_check_every: float = LEASE_CHECK_EVERY,
        head_log_every: float = HEAD_LOG_EVERY,
        rest_options: dict[str, float] | None = None,
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.cfg = cfg
        # The wall clock (tests step it); watched against the monotonic one.
        self.wall = wall
        self.clock = ClockWatch(lambda: wall().timestamp())
        self.accounts = accounts
        self.db = db
        self.connector = connector
        self.connection_limit = connection_limit
        self.nonce_clock = nonce_clock
        # One task per account folds every projection (AccountProjector); ``projectors``
        # shows each projection of each account (metrics, health, status, tests).
        self.project = project
        self.account_projectors = (
            [AccountProjector(db.engine, acc.name) for acc, _ in accounts] if project else []
        )
        self.projectors: list[ProjectionView] = [
            view for ap in self.account_projectors for view in ap.views
        ]
        self.pool: ProjectionPool | None = None  # the live projection task's, once it runs
        self.writer = Writer(db, cfg.writer)
        self.writer.on_conflict = self._conflicted
        self.status = {acc.name: AccountStatus(acc.name) for acc, _ in accounts}
        self._nonces: dict[str, PersistentNonces] = {}
        self._limits: dict[str, ConnectionRateLimit] = {}
        self._scope: trio.CancelScope | None = None
        self._startup: trio.CancelScope | None = None
        # Each account's backfill windows that a previous run left unfinished (resumed).
        self._unfinished: dict[str, list[backfill_store.Unfinished]] = {}
        # Accounts whose history before the recording is still to be asked for, from when.
        self._history_from: dict[str, datetime] = {}
        self._accounts: dict[str, AccountRecorder] = {}
        # Set after every live projection round (then replaced): what waits for the
        # projections to fold waits on it, instead of polling.
        self.folded_round = trio.Event()
        self.leases = {lease.account: lease for lease in leases or []}
        self.leased = frozenset(self.leases)  # accounts recorded under a lease (metrics)
        # Scale-out (``run --max-accounts``): accounts whose lease another process holds, taken
        # over (and recorded from then on) when it is free and this process has room.
        self.waiting = list(waiting or [])
        self.max_accounts = max_accounts
        self.lease_check_every = lease_check_every
        self.head_log_every = head_log_every
        self.log = EventLog(db.engine)
        # RestClient pacing/retry settings (tests shorten them) and each account's backfiller.
        self.rest_options = rest_options or {}
        self._stopped_at: dict[str, datetime | None] = {}
        self.metrics_port: int | None = None
        self.metrics_app: MetricsApp | None = None  # /metrics, /healthz and the status page
        # The chain's self-check ([audit] verify_every_s; None: off).
        every = cfg.audit.verify_every_s
        self.chain_watch: ChainWatch | None = (
            ChainWatch(db, [acc.name for acc, _ in accounts], every, lambda: wall().timestamp())
            if every > 0
            else None
        )
        self._http: httpx.AsyncClient | None = None
        self.stopping = False
        self.finished = trio.Event()

    def stop(self) -> None:
        """Stop reading; everything already read is still committed before run() returns.
        Any phase answers: start-up (reading where each record stopped) is cancelled, and
        sessions that have not started yet never start."""
        self.stopping = True
        for scope in (self._startup, self._scope):
            if scope is not None:
                scope.cancel()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> int:
        """Record until stop() (exit code 0) or until every account stopped on a final error
        (a rejected key, a key that can write: 2, a configuration the unit must not restart
        on). A store error the writer cannot get past (the log changed under it) is exit 1;
        a metrics address that cannot be served is exit 2, before anything connects."""
        log_fields(log, "recorder start", accounts=",".join(self.status))
        broken: StoreError | None = None
        unusable: OSError | None = None
        try:
            with trio.CancelScope() as self._startup:
                if self.stopping:
                    self._startup.cancel()
                # Where each record stopped (before anything of this run is logged): the gap
                # after it is backfilled after the first auth. Nothing here waits on REST.
                for acc, _ in self.accounts:
                    await self._where_stopped(acc)
            if not self.stopping:
                configured = [a for a, _ in self.accounts] + [a for a, _, _ in self.waiting]
                timeout = httpx.Timeout(max((a.rest_timeout_s for a in configured), default=30.0))
                async with httpx.AsyncClient(timeout=timeout) as self._http:
                    with fewer_collections():  # a long-running process moving data
                        await self._run(task_status)
        except* (StoreError, trio.BrokenResourceError) as group:
            found = [e for e in leaves(group) if isinstance(e, StoreError)]
            broken = found[0] if found else StoreError("the writer stopped")
        except* MetricsUnusable as group:
            unusable = next(e for e in leaves(group) if isinstance(e, MetricsUnusable)).error
        finally:
            with trio.CancelScope(shield=True):
                await self._log_heads("at shutdown")
                for lease in self.leases.values():
                    await self.db.run(lease.release)
        self.finished.set()
        if unusable is not None:
            why = unusable.strerror or str(unusable)
            log_fields(
                log,
                f"cannot serve metrics on {self.cfg.metrics.listen}: {why}; fix: choose "
                "another [metrics] listen address",
                logging.ERROR,
            )
            return EXIT_USAGE
        if broken is not None:
            log_fields(log, f"recorder stopped: {broken}", logging.ERROR)
            return 1
        failed = [s for s in self.status.values() if s.stopped is not None]
        log_fields(
            log,
            "recorder stopped",
            committed=self.writer.stats.committed_events,
            failed_accounts=len(failed),
        )
        if not self.stopping and failed and len(failed) == len(self.status):
            return EXIT_USAGE  # every key was refused: restarting cannot help
        return 0

    async def _where_stopped(self, acc: AccountConfig) -> None:
        """Where the account's record stopped, its unfinished backfill windows, whether its
        history before the recording is still to be asked for."""
        totals = await self.db.run(self.log.totals, acc.name)
        self._stopped_at[acc.name] = totals.last_received_at
        if acc.backfill:
            self._unfinished[acc.name] = await self.db.run(
                backfill_store.unfinished, self.db.engine, acc.name
            )
            if acc.history_from is not None and not await self.db.run(
                backfill_store.initial_fetched, self.db.engine, acc.name
            ):
                self._history_from[acc.name] = acc.history_from

    async def _take_over(self, accounts: trio.Nursery) -> None:
        """``run --max-accounts``: every ``lease_check_every`` seconds, while this process
        records fewer than ``max_accounts`` accounts, take the leases of up to
        :data:`LEASES_PER_ROUND` waiting accounts that are free (never taken yet, or whose
        holder stopped: a dead process's lease is free at once) and record them."""
        while self.waiting:
            await trio.sleep(self.lease_check_every)
            room = LEASES_PER_ROUND
            for entry in list(self.waiting):
                if self.max_accounts is not None and len(self.leases) >= self.max_accounts:
                    break
                if room == 0:
                    break
                acc, creds, lease = entry
                try:
                    if not await self.db.run(lease.try_acquire):
                        continue
                    self.waiting.remove(entry)
                    room -= 1
                    await self._adopt(acc, creds, lease, accounts)
                except StoreUnavailable:
                    break  # the database is away; the writer waits for it too
                log_fields(log, "lease taken over: recording", account=acc.name)

    async def _adopt(
        self, acc: AccountConfig, creds: Credentials, lease: Lease, accounts: trio.Nursery
    ) -> None:
        """Record one more account from now on (its lease just taken)."""
        self.leases[acc.name] = lease
        self.leased = self.leased | {acc.name}
        self.accounts.append((acc, creds))
        self.status[acc.name] = AccountStatus(acc.name)
        await self._where_stopped(acc)
        if self.project:
            projector = AccountProjector(self.db.engine, acc.name)
            self.account_projectors.append(projector)
            self.projectors.extend(projector.views)
            if self.pool is not None:  # else the pool, when it starts, takes it from the list
                self.pool.projectors[acc.name] = projector
        if self.chain_watch is not None:
            self.chain_watch.add(acc.name)
        accounts.start_soon(self._account, acc, creds, self.writer.send_channel.clone())

    async def _run(self, task_status: trio.TaskStatus[None]) -> None:
        async with trio.open_nursery() as outer:
            # Metrics first: an address that cannot be served fails before anything connects.
            metrics = trio.CancelScope()
            if self.cfg.metrics.listen:
                try:
                    self.metrics_port = await outer.start(self._serve_metrics, metrics)
                except (OSError, BaseExceptionGroup) as exc:
                    errors = leaves(exc)
                    if not errors or not all(isinstance(e, OSError) for e in errors):
                        raise
                    raise MetricsUnusable(errors[0]) from exc  # type: ignore[arg-type]
                log_fields(log, "metrics and health served", listen=self.cfg.metrics.listen)
            await outer.start(self.writer.run)
            background = trio.CancelScope()
            outer.start_soon(self._background, background)
            async with self.writer.send_channel, trio.open_nursery() as accounts:
                self._scope = accounts.cancel_scope
                if self.stopping:
                    accounts.cancel_scope.cancel()
                for acc, creds in self.accounts:
                    accounts.start_soon(self._account, acc, creds, self.writer.send_channel.clone())
                if self.waiting:
                    accounts.start_soon(self._take_over, accounts)
                task_status.started()
            await self.writer.done.wait()
            background.cancel()
            metrics.cancel()
        # Everything read is committed; bring the projections up to the end of the log, for
        # SHUTDOWN_CATCH_UP seconds at most (the next start goes on from their checkpoints).
        # A batch per call, so that the bound can act between batches: after a long burst
        # (the projectors stand back meanwhile) one call folding everything outlasted it.
        with trio.CancelScope(shield=True), trio.move_on_after(SHUTDOWN_CATCH_UP):
            for projector in self.account_projectors:
                try:
                    while await self.db.run(projector.step) is not None:
                        pass
                except Exception as exc:  # the log is complete; the next start folds on
                    log_fields(
                        log,
                        "projection catch-up at shutdown failed; the next start folds on",
                        logging.WARNING,
                        account=projector.account,
                        error=f"{type(exc).__name__}: {exc}"[:300],
                    )

    async def _serve_metrics(
        self, scope: trio.CancelScope, *, task_status: trio.TaskStatus[int]
    ) -> None:
        assert self.cfg.metrics.listen is not None
        with scope:
            self.metrics_app = MetricsApp(self)
            await serve_metrics(self.metrics_app, self.cfg.metrics.listen, task_status=task_status)

    async def _background(self, scope: trio.CancelScope) -> None:
        """Projectors, the lease watch and the periodic chain-head line, until the writer
        has drained."""
        with scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._project)
                nursery.start_soon(self._watch_leases)
                nursery.start_soon(self._heads_every)
                nursery.start_soon(self._summary_every)
                nursery.start_soon(self.clock.run)
                if self.chain_watch is not None:
                    nursery.start_soon(self.chain_watch.run)

    async def _watch_leases(self) -> None:
        """A lease can be lost (the PostgreSQL server restarted and another process took
        it): then this process stops recording that account rather than write beside it."""
        while self.leases:
            await trio.sleep(self.lease_check_every)
            for account, lease in list(self.leases.items()):
                try:
                    if await self.db.run(lease.still_held) or await self.db.run(lease.try_acquire):
                        continue
                    holder = await self.db.run(lease.holder)
                except StoreUnavailable:
                    continue  # the database is away; the writer waits for it too
                log_fields(
                    log,
                    f"account {account} stopped: its lease is now held by {holder or 'another'}"
                    " process",
                    logging.ERROR,
                    account=account,
                )
                del self.leases[account]
                if account in self._accounts:
                    self._accounts[account].stop()

    def _conflicted(self, accounts: tuple[str, ...], why: str) -> None:
        """Another process appends to these accounts (the writer no longer appends their
        items): stop recording them, and only them."""
        for account in accounts:
            status = self.status.get(account)
            if status is None or status.stopped is not None:
                continue
            log_fields(
                log,
                f"account {account} stopped: another process appends to its log",
                logging.ERROR,
                account=account,
            )
            if account in self._accounts:
                self._accounts[account].stop("error: chain conflict")
            else:
                status.stopped = SessionOutcome(reason="error: chain conflict", final=True)

    async def _summary_every(self) -> None:
        """A heartbeat line per account every ``logging.summary_interval_s``: frames since the
        last line, the slowest projector's lag, the chain head, connected or not."""
        counted: dict[str, int] = {}
        while True:
            await trio.sleep(self.cfg.logging.summary_interval_s)
            totals: dict[str, int] = {}
            for (account, _kind), n in self.writer.stats.by_kind.items():
                totals[account] = totals.get(account, 0) + n
            for account, a in health.read(self).accounts.items():
                log_fields(
                    log,
                    "summary",
                    account=account,
                    frames=totals.get(account, 0) - counted.get(account, 0),
                    projector_lag=a.lag,
                    head=a.head,
                    connected=a.connected,
                )
            counted = totals

    async def _heads_every(self) -> None:
        while True:
            await trio.sleep(self.head_log_every)
            await self._log_heads("periodic")

    async def _log_heads(self, when: str) -> None:
        """One line per account with its chain head, to keep outside the database (a
        truncated tail then fails `verify --head`)."""
        for account in self.status:
            try:
                last_id, head = await self.db.run(self.log.head, account)
            except StoreUnavailable:
                return
            if last_id:
                log_fields(log, "chain head", account=account, id=last_id, hash=head, when=when)

    async def _project(self) -> None:
        """One task per projection and account, woken by the writer's commits."""
        limiter = trio.CapacityLimiter(2)
        async with trio.open_nursery() as nursery:
            # One task folds every account: one transaction per wake-up however many
            # accounts this process records.
            if self.account_projectors or (self.project and self.waiting):
                self.pool = pool = ProjectionPool(self.db.engine, self.account_projectors)
                nursery.start_soon(
                    functools.partial(
                        run_pool,
                        self.db,
                        pool,
                        self.writer.high_water,
                        self.writer.wait_any,
                        limiter,
                        writer_behind=self.writer.behind,
                        on_round=self._round_done,
                    )
                )

    def _nonces_for(self, creds: Credentials) -> PersistentNonces:
        key = creds.api_key.reveal()
        if key not in self._nonces:
            self._nonces[key] = PersistentNonces(self.db, key, self.nonce_clock)
        return self._nonces[key]

    def _rest_client(
        self,
        acc: AccountConfig,
        creds: Credentials,
        emit: Callable[[NewEvent], Awaitable[None]],
    ) -> RestClient:
        assert self._http is not None
        options = {k: v for k, v in self.rest_options.items() if k not in ACCOUNT_REST_OPTIONS}
        return RestClient.for_account(
            acc, creds, self._nonces_for(creds), emit, self._http, **options
        )

    async def _vanished(self, account: str) -> dict[str, list[int]]:
        """Orders and positions the reconnect's snapshots no longer list and no REST answer
        explains yet: wait (bounded) until the projectors have folded what is committed,
        then read the reconciliation rows."""
        target = self.writer.high_water.get(account, 0)
        folds = [p for p in self.projectors if p.account == account and p.name in VANISHING]
        with trio.move_on_after(VANISHED_WAIT):
            while any(p.checkpoint < target for p in folds):
                await self.folded_round.wait()
        found = await self.db.run(unexplained_vanished, self.db.engine, account)
        return {name: sorted({int(k) for k in keys if k.isdigit()}) for name, keys in found.items()}

    async def _account(
        self, acc: AccountConfig, creds: Credentials, sink: trio.MemorySendChannel[Item]
    ) -> None:
        """One account's recorder (recorder/account.py), with what the process shares."""
        host = urlsplit(acc.url).netloc
        if host not in self._limits:
            self._limits[host] = ConnectionRateLimit(*self.connection_limit)
        status = self.status[acc.name]
        status.reconnect_allowance = acc.backoff_cap_s + self.connection_limit[1] + 30.0
        services = AccountServices(
            db=self.db,
            nonces=self._nonces_for(creds),
            rate_limit=self._limits[host],
            connector=(
                functools.partial(connect, max_frame_bytes=acc.max_frame_bytes)
                if self.connector is connect
                else self.connector
            ),
            wall=self.wall,
            clock=self.clock,
            db_unavailable_timeout=self.cfg.writer.unavailable_timeout_s,
            retry_every=self.rest_options.get("retry_every", BACKFILL_RETRY_EVERY),
            ledger_after_fill=self.rest_options.get("ledger_after_fill", LEDGER_AFTER_FILL),
            rest_client=(
                functools.partial(self._rest_client, acc, creds) if acc.backfill else None
            ),
            vanished=functools.partial(self._vanished, acc.name),
        )
        account = AccountRecorder(
            acc,
            creds,
            status,
            services,
            stopped_at=self._stopped_at.get(acc.name),
            unfinished=self._unfinished.get(acc.name, []),
            history_from=self._history_from.get(acc.name),
        )
        self._accounts[acc.name] = account
        await account.run(sink)

    @property
    def backfillers(self) -> dict[str, Backfiller]:
        """Each account's backfiller (accounts with the backfill on, once running)."""
        return {
            name: a.backfiller for name, a in self._accounts.items() if a.backfiller is not None
        }

    def _round_done(self) -> None:
        self.folded_round.set()
        self.folded_round = trio.Event()
