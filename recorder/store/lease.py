"""One recorder per account: a lease per (database, account), held for as long as a process
records (or rebuilds) that account.

* PostgreSQL: a session-level advisory lock, taken on the process's lock connection (one for
  all its leases, outside the store's pool; it stays open, ``AUTOCOMMIT``, so it is never idle
  in a transaction). Its ``application_name`` says who holds it (pid and host), and the
  backend's start time says since when; another process reads both from ``pg_locks`` and
  ``pg_stat_activity``. When the holder dies the server ends its backend and the locks are
  free at once.
* SQLite: an OS file lock (``flock``) on ``<database file>.lease-<account>``, beside the
  database; the file holds the holder's pid, host and start time as JSON. The kernel releases
  it when the holder's process dies, however it dies.

The key includes the PostgreSQL schema, so recorders in different schemas of one database do
not exclude each other. A connection per lease would have used up the store's pool (15
connections: the 16th lease, or the writer, waited for one) and, with 100 accounts, the
server's ``max_connections``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import random
import re
import socket
import threading
import time
import weakref
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import orjson
import sqlalchemy as sa

from recorder.store.engine import PG_CONNECT_TIMEOUT_S
from recorder.store.errors import StoreError, store_errors


class LeaseHeld(Exception):
    """The account is recorded by another process."""

    def __init__(self, account: str, holder: str | None) -> None:
        self.account = account
        self.holder = holder
        who = holder or "another process (it did not say who)"
        super().__init__(f"account {account} is recorded by {who}")


def _me() -> tuple[int, str]:
    return os.getpid(), socket.gethostname()


class Lease(Protocol):
    account: str

    def try_acquire(self) -> bool:
        """Take the lease if it is free; True when this process holds it now."""
        ...

    def holder(self) -> str | None:
        """Who holds it ("pid 4242 on host h since T"), if anyone says."""
        ...

    def still_held(self) -> bool:
        """Whether this process still holds it (False: lost, e.g. the server restarted)."""
        ...

    def release(self) -> None: ...


class FileLease:
    """SQLite: ``flock`` on a file beside the database."""

    def __init__(self, database: Path, account: str) -> None:
        self.account = account
        # Readable, and collision-free: 'a b' and 'a_b' read alike but hash apart.
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", account)[:40]
        digest = hashlib.sha256(account.encode()).hexdigest()[:12]
        self.path = database.with_name(f"{database.name}.lease-{safe}-{digest}")
        self._fd: int | None = None

    def try_acquire(self) -> bool:
        if self._fd is not None:
            return True
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        pid, host = _me()
        since = datetime.now(UTC).isoformat(timespec="seconds")
        os.ftruncate(fd, 0)
        os.pwrite(fd, orjson.dumps({"pid": pid, "host": host, "since": since}), 0)
        self._fd = fd
        return True

    def holder(self) -> str | None:
        try:
            info = orjson.loads(self.path.read_bytes())
            return f"pid {info['pid']} on host {info['host']} since {info['since']}"
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def still_held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the lock
            self._fd = None


class LockConnection:
    """PostgreSQL: the one connection (``AUTOCOMMIT``, named after this process) on which
    every lease of this process and database holds its session-level advisory lock. One per
    process, not one per account: 100 accounts' leases as 100 connections would exceed a
    default server's ``max_connections``. Used from worker threads, so under a lock. When the
    connection is lost (a server restart), every lock on it is lost with it: the next
    acquisition opens a new one, and the leases held on the old one say they are lost."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self.guard = threading.Lock()
        self.conn: sa.Connection | None = None
        # Keys locked on it, by lease: PostgreSQL's advisory locks are re-entrant within a
        # session, so a second lease object of the same account in this process must be
        # refused here.
        self.held: dict[int, AdvisoryLease] = {}

    def current(self) -> sa.Connection:
        """The live connection (opened on first use, or again after a loss); under guard."""
        if self.conn is None:
            conn = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            try:
                pid, host = _me()
                name = f"bfx-recorder pid {pid} on {host}"[:63]
                conn.execute(
                    sa.text("SELECT set_config('application_name', :n, false)"), {"n": name}
                )
            except BaseException:
                _discard(conn)
                raise
            self.conn = conn
        return self.conn

    def lost(self) -> None:
        """The connection failed: drop it (its locks are gone with its session)."""
        if self.conn is not None:
            _discard(self.conn)
            self.conn = None
        self.held.clear()


def _discard(conn: sa.Connection) -> None:
    """Close the connection for good (not back to a pool): its session ends, and with it any
    advisory lock and the application_name naming this process."""
    with contextlib.suppress(sa.exc.SQLAlchemyError):
        conn.invalidate()
        conn.close()


def _lock_key(conn: sa.Connection, account: str) -> int:
    schema = conn.exec_driver_sql("SELECT current_schema()").scalar()
    digest = hashlib.sha256(f"bfx-recorder lease {schema}/{account}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class AdvisoryLease:
    """PostgreSQL: a session-level advisory lock on this process's :class:`LockConnection`."""

    def __init__(self, account: str, locks: LockConnection) -> None:
        self.engine = locks.engine  # without a pool: holder() asks on a short connection
        self.account = account
        self.locks = locks
        self._on: sa.Connection | None = None  # the connection the lock is held on
        self._key: int | None = None

    def try_acquire(self) -> bool:
        with self.locks.guard:
            if self._on is not None and self._on is self.locks.conn:
                return True
            self._on = None
            try:
                with store_errors():
                    conn = self.locks.current()
                    key = _lock_key(conn, self.account)
                    if self.locks.held.get(key, self) is not self:
                        return False  # another lease of this process holds it
                    got = conn.execute(
                        sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": key}
                    ).scalar()
            except StoreError:
                self.locks.lost()
                raise
            if not got:
                return False
            self._on, self._key = conn, key
            self.locks.held[key] = self
            return True

    def holder(self) -> str | None:
        with store_errors(), self.engine.connect() as conn:
            key = _lock_key(conn, self.account)
            row: Any = conn.execute(
                sa.text(
                    "SELECT a.application_name, a.backend_start FROM pg_locks l "
                    "JOIN pg_stat_activity a ON a.pid = l.pid "
                    "WHERE l.locktype = 'advisory' AND l.granted "
                    "AND l.classid = ((:k >> 32) & 4294967295)::oid "
                    "AND l.objid = (:k & 4294967295)::oid AND l.objsubid = 1"
                ),
                {"k": key},
            ).first()
        if row is None or not row.application_name:
            return None
        who = str(row.application_name).removeprefix("bfx-recorder ")
        since = row.backend_start.astimezone(UTC).isoformat(timespec="seconds")
        return f"{who} since {since}"

    def still_held(self) -> bool:
        with self.locks.guard:
            if self._on is None or self._on is not self.locks.conn:
                self._on = None  # the connection it was held on is gone, and the lock
                return False
            try:
                with store_errors():
                    held = self._on.execute(
                        sa.text(
                            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                            "AND pid = pg_backend_pid() AND granted "
                            "AND classid = ((:k >> 32) & 4294967295)::oid "
                            "AND objid = (:k & 4294967295)::oid AND objsubid = 1"
                        ),
                        {"k": self._key},
                    ).scalar()
            except StoreError:  # the connection is gone, and every lock on it
                self.locks.lost()
                held = 0
            if not held:
                self._on = None
                self.locks.held.pop(self._key or 0, None)
            return bool(held)

    def release(self) -> None:
        with self.locks.guard:
            if self._on is not None and self._on is self.locks.conn:
                # Unlocked at once: a lease tried right after (another process) finds it free.
                try:
                    self._on.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": self._key})
                except sa.exc.SQLAlchemyError:
                    self.locks.lost()
                self.locks.held.pop(self._key or 0, None)
                if not self.locks.held:
                    self.locks.lost()  # no lease left: no idle connection kept open
            self._on = None


class NoLease:
    """An in-memory SQLite database: nothing else can open it."""

    def __init__(self, account: str) -> None:
        self.account = account

    def try_acquire(self) -> bool:
        return True

    def holder(self) -> str | None:
        return None

    def still_held(self) -> bool:
        return True

    def release(self) -> None:
        pass


_LOCKS: weakref.WeakKeyDictionary[sa.Engine, LockConnection] = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


def lock_connection(engine: sa.Engine) -> LockConnection:
    """PostgreSQL: this process's lock connection for ``engine``'s database, on an engine
    without a pool (it is held as long as a lease is; the store's pool stays the store's)."""
    with _LOCKS_GUARD:
        found = _LOCKS.get(engine)
        if found is None:
            given = "connect_timeout" in engine.url.query
            timeout = {} if given else {"connect_timeout": PG_CONNECT_TIMEOUT_S}
            own = sa.create_engine(engine.url, poolclass=sa.pool.NullPool, connect_args=timeout)
            found = _LOCKS[engine] = LockConnection(own)
        return found


def lease_for(engine: sa.Engine, account: str) -> Lease:
    url = engine.url
    if url.get_backend_name() == "sqlite":
        if url.database in (None, "", ":memory:"):
            return NoLease(account)
        return FileLease(Path(url.database).resolve(), account)
    return AdvisoryLease(account, lock_connection(engine))


def take_up_to(
    engine: sa.Engine, accounts: list[str], most: int
) -> tuple[list[Lease], list[Lease]]:
    """``run --max-accounts``: take the leases of at most ``most`` of ``accounts`` that are
    free, trying them in a random order (processes started together then mostly try
    different ones, and each host's share of the connections is spread over the fleet).
    Returns (the leases taken, the leases of the others, not taken), each in ``accounts``'
    order."""
    order = list(accounts)
    random.shuffle(order)
    taken: dict[str, Lease] = {}
    try:
        for account in order:
            if len(taken) >= most:
                break
            lease = lease_for(engine, account)
            if lease.try_acquire():
                taken[account] = lease
    except BaseException:
        for lease in taken.values():
            lease.release()
        raise
    held = [taken[a] for a in accounts if a in taken]
    return held, [lease_for(engine, a) for a in accounts if a not in taken]


def acquire(lease: Lease) -> None:
    """Take ``lease`` or raise :class:`LeaseHeld` naming the holder."""
    if not lease.try_acquire():
        raise LeaseHeld(lease.account, lease.holder())


def hold_all(
    engine: sa.Engine,
    accounts: list[str],
    *,
    standby: bool = False,
    poll: float = 1.0,
    on_wait: Callable[[LeaseHeld], None] | None = None,
) -> list[Lease]:
    """Take the lease of every account. Without ``standby`` a held one raises
    :class:`LeaseHeld` (and nothing stays taken); with it, wait, trying every ``poll``
    seconds, until each is free (``on_wait`` hears about the first refusal of each)."""
    held: list[Lease] = []
    try:
        for account in accounts:
            lease = lease_for(engine, account)
            told = False
            while not lease.try_acquire():
                refusal = LeaseHeld(account, lease.holder())
                if not standby:
                    raise refusal
                if not told and on_wait is not None:
                    on_wait(refusal)
                told = True
                time.sleep(poll)
            held.append(lease)
    except BaseException:
        for lease in held:
            lease.release()
        raise
    return held
