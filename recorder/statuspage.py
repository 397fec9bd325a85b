"""The status page at ``/`` of the metrics listener: what an operator looks at.

Server-rendered HTML with everything inline (no script, no CDN: it works with no network),
refreshing itself every 10 s. Per account: connected or not and since when, the last frame's
age, events today (frames and markers), the head, projector lag, open and incomplete
backfill windows, unexplained reconciliations, the lease, the chain's last self-check; and
over the last 24 hours a timeline of sessions and gaps (a gap green when a complete backfill
covers it, red when not), the balances per currency (``wallet_history``) and the latest
fills with fees.

The page is built in the metrics listener's own thread (:mod:`recorder.metrics`). What the
daemon knows is read from memory (:mod:`recorder.health`) in one short call into the daemon's
thread (:class:`Known`); the rest from the database on the page's own engine (its own
connections) in a worker thread, with bounded queries (each on an index: a day, row limits);
the page is rendered at most once every :data:`CACHE_S` seconds: reloading it ten times a
second queries the database once every five seconds, and never in the writer's thread or its
connection.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from html import escape
from typing import Any

import sqlalchemy as sa
import trio

from recorder import health
from recorder.audit.statement import dec
from recorder.audit.statement_render import step_chart
from recorder.config import DatabaseConfig
from recorder.serving import call_in
from recorder.store.engine import create_engine
from recorder.store.schema import backfills, events, reconciliations, sessions, trades
from recorder.store.schema import wallet_history as history
from recorder.store.types import utc

CACHE_S = 5.0
DAY = timedelta(hours=24)
SESSIONS_SHOWN = 200
POINTS_SHOWN = 300
FILLS_SHOWN = 15
REFRESH_S = 10
BAD = ' class="bad"'


@dataclass
class FromDatabase:
    """One account's part of the page that the database answers (read at most every
    :data:`CACHE_S` seconds)."""

    sessions: list[tuple[datetime, datetime | None, str | None]] = field(default_factory=list)
    gaps: list[tuple[datetime, datetime, bool]] = field(default_factory=list)
    balances: dict[str, list[tuple[datetime, Decimal]]] = field(default_factory=dict)
    fills: list[dict[str, Any]] = field(default_factory=list)
    events_today: int = 0
    incomplete_windows: int = 0
    unexplained: int = 0


def read_account(engine: sa.Engine, account: str, now: datetime) -> FromDatabase:
    """The bounded queries of one account (in a worker thread), each on an index: the page
    is reloaded while the writer works on the same database."""
    out = FromDatabase()
    since = now - DAY
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    s = sessions.c
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(s.authenticated_at, s.started_at, s.ended_at, s.end_reason)
            .where(s.account == account)
            .order_by(s.id.desc())
            .limit(SESSIONS_SHOWN)
        ).all()
        for r in reversed(rows):
            began, ended = utc(r.authenticated_at or r.started_at), utc(r.ended_at)
            if began is not None and (ended is None or ended >= since):
                out.sessions.append((began, ended, r.end_reason))
        # Gaps between consecutive sessions, green when a complete window (not a ledger-only
        # one) covers them: from the sessions read, not the session_gaps view (which walks
        # every session of the account).
        w = backfills.c
        covering = conn.execute(
            sa.select(w.window_from, w.window_to).where(
                w.account == account,
                w.complete.is_(True),
                w.window_to >= since,
                sa.func.coalesce(w.reason, "") != "ledger",
            )
        ).all()
        windows = [(utc(c.window_from), utc(c.window_to)) for c in covering]
        for (_, ended, _), (began, _, _) in zip(out.sessions, out.sessions[1:], strict=False):
            if ended is None or began <= ended:
                continue
            covered = any(
                a is not None and b is not None and a <= ended and b >= began for a, b in windows
            )
            out.gaps.append((ended, began, covered))
        h = history.c
        wallets = _wallets(conn, account)
        for wallet_type, currency in wallets:
            points = conn.execute(
                sa.select(h.at, h.balance)
                .where(
                    h.account == account,
                    h.wallet_type == wallet_type,
                    h.currency == currency,
                    h.at >= since,
                )
                .order_by(h.at.desc())
                .limit(POINTS_SHOWN)
            ).all()
            kept: list[tuple[datetime, Decimal]] = []
            for p in reversed(points):
                at = utc(p.at)
                if at is not None and p.balance is not None:
                    kept.append((at, p.balance))
            if kept:
                out.balances[f"{wallet_type} {currency}"] = kept
        t = trades.c
        out.fills = [
            dict(r._mapping)
            for r in conn.execute(
                sa.select(
                    t.id, t.symbol, t.mts_create, t.exec_amount, t.exec_price, t.fee, t.fee_currency
                )
                .where(t.account == account)
                .order_by(t.id.desc())  # the primary key's order: no sort of every fill
                .limit(FILLS_SHOWN)
            )
        ]
        e, rc = events.c, reconciliations.c
        out.events_today = _count(conn, events, e.account == account, e.received_at >= midnight)
        out.incomplete_windows = _count(
            conn, backfills, w.account == account, w.complete.is_(False)
        )
        out.unexplained = _count(
            conn, reconciliations, rc.account == account, rc.explained_by.is_(None)
        )
    return out


def _count(conn: sa.Connection, table: sa.Table, *where: Any) -> int:
    query = sa.select(sa.func.count()).select_from(table).where(*where)
    return int(conn.execute(query).scalar_one())


def _wallets(conn: sa.Connection, account: str) -> list[tuple[str, str]]:
    """The account's current wallets (the small ``wallets`` table)."""
    from recorder.store.schema import wallets

    c = wallets.c
    return [
        (r.wallet_type, r.currency)
        for r in conn.execute(
            sa.select(c.wallet_type, c.currency)
            .where(c.account == account)
            .order_by(c.wallet_type, c.currency)
        )
    ]


@dataclass(frozen=True)
class Known:
    """What the page shows from the daemon's memory, copied in the daemon's thread."""

    reading: health.Reading
    leases: dict[str, str]  # account -> who holds its lease
    chains: dict[str, str]  # account -> the chain's last self-check
    url: str

    @classmethod
    def take(cls, r: Any, now: datetime) -> Known:
        reading = health.read(r, now)
        return cls(
            reading,
            {a: _lease(r, a) for a in reading.accounts},
            {a: _chain(r, a) for a in reading.accounts},
            r.cfg.database.url,
        )


class StatusPage:
    """Renders ``/`` for the daemon ``recorder`` (a :class:`recorder.daemon.Recorder`) whose
    trio loop is ``home``; render() runs in another loop (the listener's)."""

    def __init__(self, recorder: Any, home: trio.lowlevel.TrioToken) -> None:
        self.r = recorder
        self.home = home
        self.engine: sa.Engine | None = None
        self.limiter = trio.CapacityLimiter(1)  # its own thread: never the writer's
        self._reading = trio.Lock()  # one read at a time; the others wait for its answer
        self._cached: tuple[float, dict[str, FromDatabase]] | None = None
        self.reads = 0  # database reads made (tests: the cache holds)
        self._rendered: tuple[float, bytes] | None = None

    def close(self) -> None:
        if self.engine is not None:
            self.engine.dispose()

    async def _from_database(self, now: datetime, known: Known) -> dict[str, FromDatabase]:
        cached = self._cached
        if cached is not None and trio.current_time() - cached[0] < CACHE_S:
            return cached[1]
        async with self._reading:
            cached = self._cached
            if cached is not None and trio.current_time() - cached[0] < CACHE_S:
                return cached[1]
            if self.engine is None:
                self.engine = create_engine(DatabaseConfig(url=known.url))
            engine = self.engine
            accounts = list(known.reading.accounts)

            def read_all() -> dict[str, FromDatabase]:
                return {a: read_account(engine, a, now) for a in accounts}

            found = await trio.to_thread.run_sync(read_all, limiter=self.limiter)
            self.reads += 1
            self._cached = (trio.current_time(), found)
            return found

    async def render(self) -> bytes:
        """The page, rendered at most once per :data:`CACHE_S` (reloads in between get the
        same bytes)."""
        rendered = self._rendered
        if rendered is not None and trio.current_time() - rendered[0] < CACHE_S:
            return rendered[1]
        now = datetime.now(UTC)
        known = await call_in(self.home, lambda: Known.take(self.r, now))
        try:
            db = await self._from_database(now, known)
            db_error = None
        except Exception as exc:  # the page says so; the daemon goes on
            db, db_error = {}, f"{type(exc).__name__}: {exc}"[:300]
        body = page(known, db, now, db_error).encode()
        self._rendered = (trio.current_time(), body)
        return body


def _age(seconds: float) -> str:
    if seconds == float("inf"):
        return "never"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _timeline(db: FromDatabase, now: datetime) -> str:
    """Sessions and gaps over the last 24 hours (or since the first session, when the
    recording is younger: a minute's recording is not a hair at the right end)."""
    width, height = 860, 40
    first = db.sessions[0][0] if db.sessions else now - DAY
    start = max(now - DAY, min(first, now - timedelta(minutes=1)))
    span = (now - start).total_seconds() or 1.0

    def x(at: datetime) -> float:
        return max(0.0, min(1.0, (at - start).total_seconds() / span)) * width

    parts = []
    for began, ended, reason in db.sessions:
        x0, x1 = x(began), x(ended or now)
        title = (
            f"{began:%H:%M:%S} .. {f'{ended:%H:%M:%S}' if ended else 'now'} ({reason or 'open'})"
        )
        parts.append(
            f'<rect class="session" x="{x0:.1f}" y="14" width="{max(x1 - x0, 1):.1f}" '
            f'height="12" fill="#9ec5f8"><title>{escape(title)}</title></rect>'
        )
    for a, b, covered in db.gaps:
        x0, x1 = x(a), x(b)
        colour = "#2e9d4f" if covered else "#d1452f"
        parts.append(
            f'<rect class="gap" data-backfilled="{str(covered).lower()}" x="{x0:.1f}" y="4" '
            f'width="{max(x1 - x0, 2):.1f}" height="32" fill="{colour}"><title>gap '
            f"{a:%H:%M:%S} .. {b:%H:%M:%S}</title></rect>"
        )
    return (
        f'<svg class="timeline" width="{width}" height="{height}" viewBox="0 0 {width} {height}">'
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="#f4f4f4"/>{"".join(parts)}'
        f'</svg><p class="legend">from {start:%Y-%m-%d %H:%M:%S} to now (UTC): blue, sessions; '
        "green, a gap a complete backfill covers; red, a gap without one</p>"
    )


def _fills(db: FromDatabase) -> str:
    if not db.fills:
        return "<p>no fills recorded</p>"
    rows = []
    for f in db.fills:
        at = utc(f["mts_create"])
        rows.append(
            "<tr>"
            f'<td data-field="fill-id">{f["id"]}</td>'
            f"<td>{escape(at.isoformat(timespec='seconds') if at else '')}</td>"
            f"<td>{escape(str(f['symbol'] or ''))}</td>"
            f'<td class="n">{escape(dec(f["exec_amount"]) or "")}</td>'
            f'<td class="n">{escape(dec(f["exec_price"]) or "")}</td>'
            f'<td class="n">{escape(dec(f["fee"]) or "")} {escape(f["fee_currency"] or "")}</td>'
            "</tr>"
        )
    return (
        "<table><tr><th>id</th><th>time (UTC)</th><th>symbol</th><th>amount</th>"
        f"<th>price</th><th>fee</th></tr>{''.join(rows)}</table>"
    )


def _lease(r: Any, account: str) -> str:
    if account in getattr(r, "leases", {}):
        return f"this process (pid {os.getpid()} on {socket.gethostname()})"
    if account in getattr(r, "leased", ()):
        return "LOST (another process holds it)"
    return "no lease"


def _chain(r: Any, account: str) -> str:
    watch = getattr(r, "chain_watch", None)
    check = watch.checks.get(account) if watch is not None else None
    if check is None or check.last_check_at is None:
        return "not checked yet" if watch is not None else "off"
    at = datetime.fromtimestamp(check.last_check_at, UTC).isoformat(timespec="seconds")
    state = f"FAILED: {check.problem}" if check.problem else f"intact up to {check.verified_id}"
    return f"{state} ({at})"


def page(
    known: Known,
    db: dict[str, FromDatabase],
    now: datetime,
    db_error: str | None = None,
) -> str:
    reading = known.reading
    rows, sections = [], []
    lags: dict[str, int] = {}
    for p in reading.projections:
        lags[p.account] = max(lags.get(p.account, 0), p.lag)
    for account, a in reading.accounts.items():
        part = db.get(account, FromDatabase())
        if a.connected:
            since = part.sessions[-1][0] if part.sessions and part.sessions[-1][1] is None else None
            state = f"connected since {since:%H:%M:%S}" if since else "connected"
        elif a.stopped:
            state = f"stopped: {a.stopped}"
        else:
            state = f"disconnected for {_age(a.disconnected_for)} ({a.last_reason or '-'})"
        cells = [
            ("account", account),
            ("state", state),
            ("last-frame-age", _age(a.last_frame_age)),
            ("events-today", str(part.events_today)),
            ("head", str(a.head)),
            ("projector-lag", str(lags.get(account, 0))),
            ("backfill-open", str(a.open_windows)),
            ("backfill-incomplete", str(part.incomplete_windows)),
            ("unexplained", str(part.unexplained)),
            ("lease", known.leases[account]),
            ("chain", known.chains[account]),
        ]
        # The cells that need a look, in red.
        bad = {
            "state": not a.connected,
            "unexplained": part.unexplained > 0,
            "backfill-incomplete": part.incomplete_windows > 0,
            "chain": cells[-1][1].startswith("FAILED"),
            "lease": cells[-2][1].startswith("LOST"),
        }
        rows.append(
            "<tr>"
            + "".join(
                f'<td data-field="{k}"{BAD if bad.get(k) else ""}>{escape(v)}</td>'
                for k, v in cells
            )
            + "</tr>"
        )
        charts = "".join(
            step_chart(name, points, now - DAY, now)
            for name, points in sorted(part.balances.items())
        )
        sections.append(
            f'<section data-account="{escape(account)}"><h2>{escape(account)}</h2>'
            f"{_timeline(part, now)}<h3>Balances, last 24 hours</h3>"
            f'<div class="charts">{charts or "<p>no balance changes</p>"}</div>'
            f"<h3>Latest fills</h3>{_fills(part)}</section>"
        )
    warning = (
        f'<p class="bad">the database could not be read: {escape(db_error)}</p>' if db_error else ""
    )
    head = (
        "<th>account</th><th>state</th><th>last frame</th><th>events today</th><th>head</th>"
        "<th>projector lag</th><th>backfill open</th><th>incomplete</th><th>unexplained</th>"
        "<th>lease</th><th>chain self-check</th>"
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="refresh" content="{REFRESH_S}">
<title>bfx-recorder status</title>
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }}
table {{ border-collapse: collapse; margin: .5em 0 1em; }}
td, th {{ border: 1px solid #ccc; padding: 3px 8px; text-align: left; }}
td.n {{ text-align: right; font-variant-numeric: tabular-nums; }}
td[data-field="state"] {{ color: #2e7d32; }}
td.bad, p.bad {{ color: #c62828; font-weight: 600; }}
.charts {{ display: flex; flex-wrap: wrap; gap: 1em; }}
figure {{ margin: 0; }} figcaption, .legend {{ color: #666; font-size: 12px; }}
</style></head><body>
<h1>bfx-recorder</h1>
<p>as of <time data-field="now">{now.isoformat(timespec="seconds")}</time>, refreshed every
{REFRESH_S} s; writer queue {reading.queue_depth}</p>{warning}
<table class="accounts"><tr>{head}</tr>{"".join(rows)}</table>
{"".join(sections)}
</body></html>
"""
