"""The composition root: one writer, one supervisor per account, graceful shutdown.

Lifetimes nest so that nothing already read can be lost on shutdown::

    writer (drains its channel, then returns)
      └── accounts nursery (one supervisor per account; cancelled by stop())
            └── sessions: on cancellation they send their last frames, a
                recorder.disconnected marker and end_reason='shutdown' under a shielded,
                bounded scope, then close their clone of the writer's channel

When every clone is closed the writer commits what is queued and returns.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlsplit

import trio

from recorder.config import AccountConfig, Config, Credentials
from recorder.logs import log_fields
from recorder.projections.projector import projectors_for, run_live
from recorder.store import sessions as session_store
from recorder.store.database import Database
from recorder.upstream.backoff import Backoff, ConnectionRateLimit
from recorder.upstream.connection import Connector, connect
from recorder.upstream.nonces import PersistentNonces
from recorder.upstream.session import Session, SessionOutcome, SessionParams
from recorder.upstream.supervisor import supervise
from recorder.writer import Item, Writer

log = logging.getLogger(__name__)


@dataclass
class AccountStatus:
    name: str
    sessions: int = 0
    connected: bool = False
    last_reason: str | None = None
    stopped: SessionOutcome | None = None


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
    ) -> None:
        self.cfg = cfg
        self.accounts = accounts
        self.db = db
        self.connector = connector
        self.connection_limit = connection_limit
        self.nonce_clock = nonce_clock
        self.projectors = (
            [p for acc, _ in accounts for p in projectors_for(db.engine, acc.name)]
            if project
            else []
        )
        self.writer = Writer(db, cfg.writer)
        self.status = {acc.name: AccountStatus(acc.name) for acc, _ in accounts}
        self._nonces: dict[str, PersistentNonces] = {}
        self._limits: dict[str, ConnectionRateLimit] = {}
        self._scope: trio.CancelScope | None = None
        self.stopping = False
        self.finished = trio.Event()

    def stop(self) -> None:
        """Stop reading; everything already read is still committed before run() returns."""
        self.stopping = True
        if self._scope is not None:
            self._scope.cancel()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> int:
        """Record until stop() (exit code 0) or until every account failed finally (1)."""
        log_fields(log, "recorder start", accounts=",".join(self.status))
        async with trio.open_nursery() as outer:
            await outer.start(self.writer.run)
            projecting = trio.CancelScope()
            outer.start_soon(self._project, projecting)
            async with self.writer.send_channel, trio.open_nursery() as accounts:
                self._scope = accounts.cancel_scope
                for acc, creds in self.accounts:
                    accounts.start_soon(self._account, acc, creds, self.writer.send_channel.clone())
                task_status.started()
            await self.writer.done.wait()
            projecting.cancel()
        # Everything read is committed; bring the projections up to the end of the log.
        with trio.CancelScope(shield=True), trio.move_on_after(60):
            for projector in self.projectors:
                await self.db.run(projector.catch_up)
        self.finished.set()
        failed = [s for s in self.status.values() if s.stopped is not None]
        log_fields(
            log,
            "recorder stopped",
            committed=self.writer.stats.committed_events,
            failed_accounts=len(failed),
        )
        if not self.stopping and failed and len(failed) == len(self.status):
            return 1
        return 0

    async def _project(self, scope: trio.CancelScope) -> None:
        """One task per projection and account, woken by the writer's commits."""
        limiter = trio.CapacityLimiter(2)
        with scope:
            async with trio.open_nursery() as nursery:
                for projector in self.projectors:
                    nursery.start_soon(
                        run_live, self.db, projector, self.writer.wait_beyond, limiter
                    )

    async def _account(
        self, acc: AccountConfig, creds: Credentials, sink: trio.MemorySendChannel[Item]
    ) -> None:
        status = self.status[acc.name]
        async with sink:
            key = creds.api_key.reveal()
            if key not in self._nonces:
                self._nonces[key] = PersistentNonces(self.db, key, self.nonce_clock)
            nonces = self._nonces[key]
            host = urlsplit(acc.url).netloc
            if host not in self._limits:
                self._limits[host] = ConnectionRateLimit(*self.connection_limit)
            params = SessionParams(
                account=acc.name,
                url=acc.url,
                api_key=creds.api_key,
                api_secret=creds.api_secret,
                filter=acc.filter,
                dms=acc.dms,
                heartbeat_period=acc.heartbeat_period_s,
                pong_timeout=min(10.0, acc.heartbeat_period_s),
                db_unavailable_timeout=self.cfg.writer.unavailable_timeout_s,
            )

            async def open_session(account: str, url: str, at: datetime) -> int:
                return await self.db.run(
                    session_store.open_session, self.db.engine, account, url, at
                )

            def connected() -> None:
                status.connected = True

            def make_session() -> Session:
                status.sessions += 1
                return Session(
                    params,
                    sink=sink,
                    open_session=open_session,
                    next_nonce=nonces.next,
                    connector=self.connector,
                    on_connected=connected,
                )

            def on_outcome(outcome: SessionOutcome) -> None:
                status.connected = False
                status.last_reason = outcome.reason

            status.stopped = await supervise(
                acc.name,
                make_session,
                backoff=Backoff(cap=acc.backoff_cap_s),
                rate_limit=self._limits[host],
                on_outcome=on_outcome,
            )
            status.connected = False
