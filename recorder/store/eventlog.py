"""The append-only event log: the only code that reads or writes the ``events`` table.

:class:`EventLog` is the one interface (as the eventsourcing library's recorders are):
``append`` a batch, ``read`` a page after a position, ``high_water``, ``head``, ``accounts``,
``at_time``, plus the few aggregates the commands show. Every method maps driver errors to
:mod:`recorder.store.errors`; every reader can join a caller's transaction (``conn=``) so a
projector reads and writes its rows in one.

Appends happen in one transaction per batch. On PostgreSQL the transaction first takes
``LOCK TABLE events IN EXCLUSIVE MODE``: ids come from a sequence, and without the lock two
writer processes could commit ids out of order, so a projector reading ``id > checkpoint``
might skip a row that commits late (design.md invariant 2). With the lock, appends are
serialized and commit order equals id order on the whole table. Readers are not blocked
(EXCLUSIVE still allows plain SELECTs). SQLite serializes writers by itself.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple, TypeVar

import orjson
import sqlalchemy as sa

from recorder.store.errors import StoreError, store_errors
from recorder.store.hashchain import GENESIS, chain_hash_iso
from recorder.store.schema import events, sessions
from recorder.store.sessions import update_session

T = TypeVar("T")
PAGE = 5000


class NewEvent(NamedTuple):
    """One row to append: a frame as read from the socket, or a local marker. (A NamedTuple:
    one is built per frame on the hot path, and it is the cheapest immutable record.)"""

    account: str
    session_id: int | None
    received_at: datetime
    chan_id: int | None
    kind: str
    seq: int | None
    auth_seq: int | None
    frame: str


class StoredEvent(NamedTuple):
    """One row of the log as read back. With ``brief=True`` reads only ``id``, ``account``,
    ``received_at``, ``kind`` and ``frame`` are filled (what a fold needs; the rest stay
    None), and ``received_at`` is as the driver returns it (text on SQLite: see
    :attr:`recorder.projections.base.Event.received_at`)."""

    id: int
    account: str
    session_id: int | None
    received_at: Any
    chan_id: int | None
    kind: str
    seq: int | None
    auth_seq: int | None
    frame: str
    hash: str | None


def marker(
    account: str, session_id: int | None, at: datetime, kind: str, fields: dict[str, Any]
) -> NewEvent:
    """A local marker (``recorder.<what>``, ``rest.error``): its kind, and as its frame the
    JSON ``{"event": kind, ...fields}`` (values JSON cannot take are written as text)."""
    text = orjson.dumps({"event": kind, **fields}, default=str).decode()
    return NewEvent(account, session_id, at, None, kind, None, None, text)


@dataclass(frozen=True, slots=True)
class SessionChange:
    """An update of a ``sessions`` row, committed in order with the events around it."""

    session_id: int
    values: dict[str, Any]


@dataclass(frozen=True)
class AppendResult:
    last_ids: dict[str, int]  # account -> highest id written in this batch
    last_hashes: dict[str, str]
    count: int


@dataclass(frozen=True)
class Page:
    """A page of the log. ``covered`` is the position the reader may move its checkpoint to:
    every event of the account up to it that matches the query is in ``events``."""

    events: list[StoredEvent]
    covered: int


@dataclass(frozen=True)
class Within:
    """Which events a read keeps besides account, position and kind: one session's, chanId 0
    frames only, received in ``[start, end]``."""

    session_id: int | None = None
    chan0_only: bool = False
    start: datetime | None = None
    end: datetime | None = None

    def apply(self, query: sa.Select[Any]) -> sa.Select[Any]:
        if self.session_id is not None:
            query = query.where(events.c.session_id == self.session_id)
        if self.chan0_only:
            query = query.where(events.c.chan_id == 0)
        if self.start is not None:
            query = query.where(events.c.received_at >= self.start)
        if self.end is not None:
            query = query.where(events.c.received_at <= self.end)
        return query


EVERYTHING = Within()


@dataclass(frozen=True)
class AccountTotals:
    events: int
    last_id: int
    last_received_at: datetime | None


_INSERT_COLUMNS = "account, session_id, received_at, chan_id, kind, seq, auth_seq, frame, hash"
_FULL = (
    events.c.id,
    events.c.account,
    events.c.session_id,
    events.c.received_at,
    events.c.chan_id,
    events.c.kind,
    events.c.seq,
    events.c.auth_seq,
    events.c.frame,
    events.c.hash,
)
# What folds read. ``received_at`` as the driver returns it (text on SQLite, converted by
# the few folds that use it): a datetime per row was 7% of a fold's time.
_BRIEF = (
    events.c.id,
    events.c.account,
    events.c.kind,
    events.c.frame,
    sa.type_coerce(events.c.received_at, sa.Text).label("received_at"),
)


def _brief(r: Any) -> StoredEvent:
    """A row of ``_BRIEF`` as a :class:`StoredEvent` (the columns it does not read: None)."""
    return StoredEvent(r[0], r[1], None, r[4], None, r[2], None, None, r[3], None)


def _insert_sql(dialect: str) -> str:
    marks = ", ".join(["?" if dialect == "sqlite" else "%s"] * 9)
    return f"INSERT INTO events ({_INSERT_COLUMNS}) VALUES ({marks})"


def _copy_rows(conn: sa.Connection, rows: list[tuple[Any, ...]]) -> None:
    """PostgreSQL: COPY the batch in, inside the append transaction (several times faster
    than row-by-row INSERTs). Raises psycopg's own errors: callers map them."""
    driver: Any = conn.connection.driver_connection
    with driver.cursor() as cur, cur.copy(f"COPY events ({_INSERT_COLUMNS}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)


def _as_utc(value: Any) -> datetime | None:
    if isinstance(value, str):  # aggregates skip the column type on SQLite
        value = datetime.fromisoformat(value)
    if isinstance(value, datetime) and value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value


class ChainConflict(StoreError):
    """The account's log does not end where this writer left it: someone else appends.
    ``accounts``: the accounts concerned (the batch's others are not)."""

    def __init__(self, message: str, accounts: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.accounts = tuple(accounts)


def storable(frame: str) -> str:
    """``frame`` as it can be stored: PostgreSQL text cannot hold a NUL character, so a raw
    NUL (never valid in JSON: such a frame is classified ``malformed``) is stored as the JSON
    escape ``\\u0000``, on both backends alike. Every other character is kept as received."""
    return frame.replace("\x00", "\\u0000")


def chain_rows(
    items: Sequence[NewEvent | SessionChange], prev: dict[str, str], *, sqlite: bool
) -> tuple[list[tuple[Any, ...]], dict[str, str]]:
    """The rows to insert for ``items`` (in the columns' storage form) and each account's
    hash after them, chained from ``prev`` (account -> hash of its last stored row). Pure:
    the writer can recompute what a batch would end on without touching the database."""
    hashes: dict[str, str] = {}
    rows: list[tuple[Any, ...]] = []
    for item in items:
        if isinstance(item, SessionChange):
            continue
        if "\x00" in item.frame:
            item = item._replace(frame=storable(item.frame))
        acc = item.account
        before = hashes.get(acc) or prev.get(acc) or GENESIS
        at = item.received_at
        if at.tzinfo is not UTC:
            at = at.astimezone(UTC)
        iso = at.isoformat(timespec="microseconds")  # once, for the hash and SQLite
        h = chain_hash_iso(
            before,
            acc,
            item.session_id,
            iso,
            item.chan_id,
            item.kind,
            item.seq,
            item.auth_seq,
            item.frame,
        )
        hashes[acc] = h
        # SQLite stores SQLAlchemy's DATETIME text ('YYYY-MM-DD HH:MM:SS.ffffff', UTC).
        stored = f"{iso[:10]} {iso[11:26]}" if sqlite else at
        rows.append(
            (
                acc,
                item.session_id,
                stored,
                item.chan_id,
                item.kind,
                item.seq,
                item.auth_seq,
                item.frame,
                h,
            )
        )
    return rows, hashes


@functools.lru_cache(maxsize=64)
def _read_query(
    within: Within, brief: bool, by_account: bool, bounded: bool, by_kind: bool
) -> sa.Select[Any]:
    """The page query of :meth:`EventLog.read` for one combination of filters, with its
    values as bound parameters: built once, so SQLAlchemy's compiled cache serves every
    later page (the live projectors read thousands of pages a second at 100 accounts)."""
    query = within.apply(sa.select(*(_BRIEF if brief else _FULL))).where(
        events.c.id > sa.bindparam("after")
    )
    if by_account:
        query = query.where(events.c.account == sa.bindparam("account"))
    if bounded:
        query = query.where(events.c.id <= sa.bindparam("high"))
    if by_kind:
        query = query.where(events.c.kind.in_(sa.bindparam("kinds", expanding=True)))
    return query.order_by(events.c.id).limit(sa.bindparam("limit"))


# The brief, bounded, kind-filtered page of several accounts (``read_accounts``).
_ACCOUNTS_QUERY = _read_query(EVERYTHING, True, False, True, True).where(
    events.c.account.in_(sa.bindparam("accounts", expanding=True))
)
_HIGH_WATER = sa.select(sa.func.max(events.c.id)).where(events.c.account == sa.bindparam("a"))
# An append's new positions: every row above the log's last id before it is the batch's.
_LAST_ID = sa.select(sa.func.max(events.c.id))
_BATCH_LAST_IDS = (
    sa.select(events.c.account, sa.func.max(events.c.id))
    .where(events.c.id > sa.bindparam("before"))
    .group_by(events.c.account)
)
# SQLite's planner took the query above as a scan of the whole covering index on (account,
# received_at), which yields rows grouped by account, instead of the id range: a batch's
# cost grew with the log (0.27 s a batch at 1.4 million rows; the recorder's CPU per frame
# doubled between 200,000 and 1,200,000 frames, the reads of those pages its system time).
# ``+account`` is no longer an indexed column: the rowid range, then a small sort.
_BATCH_LAST_IDS_SQLITE = sa.text(
    "SELECT account, max(id) FROM events WHERE id > :before GROUP BY +account"
)


def _accounts_query() -> sa.Select[Any]:
    """The distinct accounts by walking the account index from one to the next (a recursive
    query, the same on SQLite and PostgreSQL): a lookup per account, where ``SELECT
    DISTINCT`` reads every row of the log (9 % of ``state --at`` on a 300k-event log)."""
    later = events.alias("later")
    walk = sa.select(sa.func.min(events.c.account).label("account")).cte("walk", recursive=True)
    step = sa.select(
        sa.select(sa.func.min(later.c.account))
        .where(later.c.account > walk.c.account)
        .scalar_subquery()
    ).where(walk.c.account.is_not(None))
    walk = walk.union_all(step)
    return sa.select(walk.c.account).where(walk.c.account.is_not(None))


_ACCOUNTS = _accounts_query()

# PostgreSQL picks the page queries' plans from the table's statistics. Where ``events`` has
# never been analyzed (autovacuum off, or a bulk load the daemon just committed) it takes a
# range of millions of rows for a few hundred, and reads a page as a bitmap scan of the
# whole range plus a top-N sort: 2.2 s per 2,000-event page with 2.9 million left, where an
# ordered index scan stops after 2,000 rows (the live projectors crawled at 2,000-3,500
# events/s after a 5,000,000-frame burst). A page is always "the next ``limit`` rows in id
# order", which an index read in order answers for any data, so the reads tell the planner
# so, for their own statements only (LOCAL, then back to the server's defaults: a reader
# may share its caller's transaction). One round trip each way; no statistics needed.
_ORDERED_PLANS = "SET LOCAL enable_bitmapscan = off; SET LOCAL enable_sort = off"
_DEFAULT_PLANS = "SET LOCAL enable_bitmapscan TO DEFAULT; SET LOCAL enable_sort TO DEFAULT"


class EventLog:
    """The event log of one database (every account)."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self.sqlite = engine.dialect.name == "sqlite"
        # Tests only: called after an append committed, to fake a connection lost before
        # the commit's reply (the writer must then find out that the batch landed).
        self.after_commit: Callable[[], None] | None = None

    # --- plumbing ---------------------------------------------------------------------------

    def _connect(self, conn: sa.Connection | None) -> AbstractContextManager[sa.Connection]:
        return nullcontext(conn) if conn is not None else self.engine.connect()

    def _query(self, fn: Callable[[sa.Connection], T], conn: sa.Connection | None = None) -> T:
        with store_errors(), self._connect(conn) as c:
            return fn(c)

    def _page(
        self, c: sa.Connection, query: sa.Select[Any], params: dict[str, Any]
    ) -> Sequence[Any]:
        """The rows of a page query, planned as an ordered index read on PostgreSQL whatever
        its statistics say (see ``_ORDERED_PLANS``). The settings are put back only after
        a success: a failed statement aborts the transaction, whose end drops them."""
        if self.sqlite:
            return c.execute(query, params).all()
        c.exec_driver_sql(_ORDERED_PLANS)
        rows = c.execute(query, params).all()
        c.exec_driver_sql(_DEFAULT_PLANS)
        return rows

    # --- writing ----------------------------------------------------------------------------

    def append(
        self, items: Sequence[NewEvent | SessionChange], known_hashes: dict[str, str]
    ) -> AppendResult:
        """Append ``items`` in one transaction, chaining hashes from ``known_hashes`` (account
        -> hash of its last row; missing accounts are read from the database under the
        lock). Session changes are applied in the same transaction."""
        with store_errors():
            with self.engine.begin() as conn:
                result = self._append(conn, items, known_hashes)
            if self.after_commit is not None:
                self.after_commit()
        return result

    def _append(
        self,
        conn: sa.Connection,
        items: Sequence[NewEvent | SessionChange],
        known_hashes: dict[str, str],
    ) -> AppendResult:
        if not self.sqlite:
            conn.exec_driver_sql("LOCK TABLE events IN EXCLUSIVE MODE")
        prev = dict(known_hashes)
        for item in items:
            if isinstance(item, NewEvent) and item.account not in prev:
                prev[item.account] = self._last_hash(conn, item.account)
        rows, hashes = chain_rows(items, prev, sqlite=self.sqlite)
        before = int(conn.execute(_LAST_ID).scalar() or 0) if rows else 0
        if rows:
            # The hot path: no per-row SQLAlchemy parameter processing (the values are already
            # in the columns' storage form).
            if self.sqlite:
                conn.exec_driver_sql(_insert_sql("sqlite"), rows)
            else:
                _copy_rows(conn, rows)
        for item in items:
            if isinstance(item, SessionChange):
                update_session(conn, item.session_id, item.values)
        # One query, not one per account (a batch spans up to 100 accounts); under the
        # append lock every id above ``before`` is this batch's.
        batch_last_ids = _BATCH_LAST_IDS_SQLITE if self.sqlite else _BATCH_LAST_IDS
        last_ids = (
            {acc: int(last) for acc, last in conn.execute(batch_last_ids, {"before": before})}
            if rows
            else {}
        )
        return AppendResult(last_ids, hashes, len(rows))

    def landed(
        self, items: Sequence[NewEvent | SessionChange], known_hashes: dict[str, str]
    ) -> AppendResult | None:
        """After an append whose outcome is unknown (the connection was lost around the
        commit): did it commit? Compares each account's head with the hash the batch would
        end on (committed: its result) and the hash before it (not committed: None). Anything
        else means another writer appended to the account: :class:`ChainConflict`."""
        _, after = chain_rows(items, known_hashes, sqlite=self.sqlite)
        count = sum(1 for i in items if isinstance(i, NewEvent))
        if not after:  # only session changes: applying them again is harmless
            return None
        heads = {acc: self.head(acc) for acc in after}
        if all(heads[acc][1] == h for acc, h in after.items()):
            return AppendResult({acc: heads[acc][0] for acc in after}, after, count)
        if all(heads[acc][1] == known_hashes.get(acc, GENESIS) for acc in after):
            return None
        conflicted = [
            acc
            for acc in after
            if heads[acc][1] not in (after[acc], known_hashes.get(acc, GENESIS))
        ]
        conflicts = [
            f"{acc} (head {heads[acc][0]}:{heads[acc][1][:12]}, expected "
            f"{known_hashes.get(acc, GENESIS)[:12]} or {after[acc][:12]})"
            for acc in conflicted
        ]
        raise ChainConflict(
            "the event log changed under this writer for account(s) "
            + ", ".join(conflicts)
            + ": another process appends to it; stop it (one recorder per account)",
            conflicted,
        )

    def heads(self, accounts: Iterable[str]) -> dict[str, str]:
        """The chain hash of each account's last row (GENESIS for an empty account)."""
        return {acc: self.head(acc)[1] for acc in accounts}

    # --- positions --------------------------------------------------------------------------

    @staticmethod
    def _last_hash(conn: sa.Connection, account: str) -> str:
        value = conn.execute(
            sa.select(events.c.hash)
            .where(events.c.account == account)
            .order_by(events.c.id.desc())
            .limit(1)
        ).scalar()
        return value or GENESIS

    @staticmethod
    def _high_water(conn: sa.Connection, account: str) -> int:
        return int(conn.execute(_HIGH_WATER, {"a": account}).scalar() or 0)

    def high_water(self, account: str, *, conn: sa.Connection | None = None) -> int:
        """The account's last committed position (0 for an empty log)."""
        return self._query(lambda c: self._high_water(c, account), conn)

    def head(self, account: str, *, conn: sa.Connection | None = None) -> tuple[int, str]:
        """The account's last position and its chain hash (``(0, GENESIS)`` when empty)."""

        def q(c: sa.Connection) -> tuple[int, str]:
            row = c.execute(
                sa.select(events.c.id, events.c.hash)
                .where(events.c.account == account)
                .order_by(events.c.id.desc())
                .limit(1)
            ).first()
            return (0, GENESIS) if row is None else (int(row.id), str(row.hash))

        return self._query(q, conn)

    def hash_at(self, event_id: int) -> tuple[str, str] | None:
        """(account, hash) of the row at position ``event_id``, if the log has it."""
        query = sa.select(events.c.account, events.c.hash).where(events.c.id == event_id)
        return self._query(
            lambda c: (lambda r: None if r is None else (r[0], r[1]))(c.execute(query).first())
        )

    def accounts(self, *, conn: sa.Connection | None = None) -> list[str]:
        """Every account with at least one event, sorted."""
        return self._query(lambda c: sorted(c.execute(_ACCOUNTS).scalars()), conn)

    def at_time(self, account: str, at: datetime, *, conn: sa.Connection | None = None) -> int:
        """The position of the last event received at or before ``at`` (0 if none). Walks
        the (account, received_at) index backwards: O(log n), unlike max(id) over a range."""
        return self._query(
            lambda c: int(
                c.execute(
                    sa.select(events.c.id)
                    .where(events.c.account == account, events.c.received_at <= at)
                    .order_by(events.c.received_at.desc(), events.c.id.desc())
                    .limit(1)
                ).scalar()
                or 0
            ),
            conn,
        )

    # --- reading ----------------------------------------------------------------------------

    def read(
        self,
        account: str | None,
        after: int,
        limit: int,
        kinds: Iterable[str] | None = None,
        up_to: int | None = None,
        *,
        within: Within = EVERYTHING,
        brief: bool = False,
        known_high: int | None = None,
        conn: sa.Connection | None = None,
    ) -> Page:
        """Events after position ``after`` in id order, at most ``limit`` of them.

        With an ``account``, the page never reaches past the account's high-water mark read
        first (nor ``up_to``), and ``covered`` says how far the log has been read: a
        projector that moves its checkpoint to ``covered`` never skips an event that commits
        late (appends are serialized, so ids become visible in id order). Without an account
        (every account), ``covered`` is the last id returned. ``known_high``: the caller
        knows the account's events up to there are committed (its own writer's mark), so the
        mark is not read again (a query saved per page for the live projectors).
        """

        def q(c: sa.Connection) -> Page:
            high: int | None = None
            params: dict[str, Any] = {"after": after, "limit": limit}
            if account is not None:
                high = known_high if known_high is not None else self._high_water(c, account)
                if up_to is not None:
                    high = min(high, up_to)
                if high <= after:
                    return Page([], after)
                params |= {"account": account, "high": high}
            elif up_to is not None:
                params["high"] = up_to
            if kinds is not None:
                params["kinds"] = sorted(kinds)
            query = _read_query(
                within, brief, account is not None, "high" in params, kinds is not None
            )
            rows = self._page(c, query, params)
            found = [_brief(r) for r in rows] if brief else [StoredEvent(*r) for r in rows]
            if high is None or len(rows) == limit:
                covered = found[-1].id if found else after
            else:
                covered = high
            return Page(found, covered)

        return self._query(q, conn)

    def read_accounts(
        self,
        accounts: Iterable[str],
        after: int,
        high: int,
        limit: int,
        kinds: Iterable[str],
        *,
        conn: sa.Connection | None = None,
    ) -> Page:
        """Events of several accounts in ``(after, high]`` in id order, at most ``limit``
        (brief rows). ``high`` must be a committed position (the caller's writer's mark):
        every id below it is visible, so ``covered`` (``high`` unless the page is full)
        holds for each of the accounts. One query for a hundred accounts that each have a
        few new events, instead of a hundred."""
        if high <= after:
            return Page([], after)
        params = {
            "after": after,
            "high": high,
            "limit": limit,
            "accounts": sorted(accounts),
            "kinds": sorted(kinds),
        }

        def q(c: sa.Connection) -> Page:
            rows = self._page(c, _ACCOUNTS_QUERY, params)
            found = [_brief(r) for r in rows]
            return Page(found, found[-1].id if len(rows) == limit else high)

        return self._query(q, conn)

    def iterate(
        self,
        account: str | None = None,
        *,
        after: int = 0,
        kinds: Iterable[str] | None = None,
        up_to: int | None = None,
        within: Within = EVERYTHING,
        page: int = PAGE,
    ) -> Iterator[StoredEvent]:
        """Every matching event in id order, one page per query (keyset pagination:
        constant memory, and no transaction held open while the caller consumes them)."""
        while True:
            got = self.read(account, after, page, kinds, up_to, within=within)
            yield from got.events
            if got.covered == after or not got.events:
                return
            after = got.covered

    # --- aggregates for the commands ----------------------------------------------------------

    def count(
        self,
        accounts: Iterable[str] | None = None,
        *,
        kinds: Iterable[str] | None = None,
        within: Within = EVERYTHING,
    ) -> int:
        query = within.apply(sa.select(sa.func.count()).select_from(events))
        if accounts is not None:
            query = query.where(events.c.account.in_(list(accounts)))
        if kinds is not None:
            query = query.where(events.c.kind.in_(sorted(kinds)))
        return self._query(lambda c: int(c.execute(query).scalar_one()))

    def count_by_kind(self, account: str) -> dict[str, int]:
        query = (
            sa.select(events.c.kind, sa.func.count())
            .where(events.c.account == account)
            .group_by(events.c.kind)
        )
        return self._query(lambda c: {k: int(n) for k, n in c.execute(query).all()})

    def totals(self, account: str, *, conn: sa.Connection | None = None) -> AccountTotals:
        """Events, last position and last receive time of ``account``."""
        query = sa.select(
            sa.func.count(), sa.func.max(events.c.id), sa.func.max(events.c.received_at)
        ).where(events.c.account == account)

        def q(c: sa.Connection) -> AccountTotals:
            n, top, last_at = c.execute(query).one()
            return AccountTotals(int(n), int(top or 0), _as_utc(last_at))

        return self._query(q, conn)

    def received_at(
        self, ids: Iterable[int], *, conn: sa.Connection | None = None
    ) -> dict[int, datetime]:
        """When each of ``ids`` was received."""
        wanted = sorted(set(ids))

        def q(c: sa.Connection) -> dict[int, datetime]:
            out: dict[int, datetime] = {}
            for i in range(0, len(wanted), 500):
                chunk = wanted[i : i + 500]
                for r in c.execute(
                    sa.select(events.c.id, events.c.received_at).where(events.c.id.in_(chunk))
                ):
                    out[int(r.id)] = r.received_at
            return out

        return self._query(q, conn)

    def sessions_with_frames(
        self, account: str, start: datetime | None = None, end: datetime | None = None
    ) -> list[int]:
        """Ids of the sessions with at least one chanId 0 frame in the range, in order."""
        query = (
            sa.select(sessions.c.id)
            .where(sessions.c.account == account)
            .where(
                sa.exists().where(
                    events.c.session_id == sessions.c.id,
                    events.c.chan_id == 0,
                    *([events.c.received_at >= start] if start else []),
                    *([events.c.received_at <= end] if end else []),
                )
            )
            .order_by(sessions.c.id)
        )
        return self._query(lambda c: [int(s) for s in c.execute(query).scalars()])
