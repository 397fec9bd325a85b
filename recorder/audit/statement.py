"""The period statement (``bfx-recorder report``): what an auditor reads.

Per wallet and currency, from the ledger (the exchange's book of entries, fetched around
gaps and, while connected, every ``ledger_every_s``): the opening balance (the balance after
the last entry before the period, or before the first entry in it), the period's entries summed
by group (trades, fees, funding income and costs, deposits, withdrawals, transfers,
settlements, other; from the category of each description), the closing balance (after the
last entry in the period), and the check ``opening + entries = closing`` to the last digit;
where it does not hold, each ledger row whose balance does not follow from the previous one is
listed. Beside it, the balance the socket last stated in the period (``wallet_history``).

Also: fees per currency and fills and volume per pair (``trades``), the longest positions,
and the record's own health (sessions, every gap and whether a complete backfill covers it,
the chain head at the end and whether the chain verifies up to it).

Everything is read in id or time order with server-side cursors and summed as Decimals, so
memory stays flat however long the log is; only the balance-over-time series for the chart is
thinned to at most :data:`CHART_POINTS` points per wallet and currency.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from recorder.audit.verify import first_bad
from recorder.protocol.ledger import GROUP_ORDER, group
from recorder.store.eventlog import EventLog
from recorder.store.hashchain import GENESIS
from recorder.store.schema import events, ledgers, positions, sessions, trades, wallet_history
from recorder.store.types import utc

CHART_POINTS = 400
Tick = Callable[[int], None]


def dec(value: Decimal | None) -> str | None:
    """An amount as plain decimal text (never exponent notation)."""
    if value is None:
        return None
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


@dataclass
class WalletLine:
    wallet: str
    currency: str
    opening: Decimal = Decimal(0)
    closing: Decimal | None = None
    entries: dict[str, Decimal] = field(default_factory=dict)
    count: int = 0
    unknown: int = 0  # entries whose description has no known category
    differences: list[dict[str, Any]] = field(default_factory=list)
    socket_closing: Decimal | None = None
    points: list[tuple[datetime, Decimal]] = field(default_factory=list)

    @property
    def total(self) -> Decimal:
        return sum(self.entries.values(), Decimal(0))

    @property
    def balanced(self) -> bool:
        return self.closing is None or self.opening + self.total == self.closing

    def as_json(self) -> dict[str, Any]:
        return {
            "wallet": self.wallet,
            "currency": self.currency,
            "opening": dec(self.opening),
            "entries": {g: dec(self.entries[g]) for g in GROUP_ORDER if g in self.entries},
            "entries_total": dec(self.total),
            "closing": dec(self.closing if self.closing is not None else self.opening),
            "balanced": self.balanced,
            "entry_count": self.count,
            "unknown_category": self.unknown,
            "differences": self.differences,
            "socket_closing": dec(self.socket_closing),
        }


@dataclass
class Statement:
    account: str
    start: datetime
    end: datetime
    wallets: list[WalletLine] = field(default_factory=list)
    fees: dict[str, Decimal] = field(default_factory=dict)
    pairs: dict[str, dict[str, Any]] = field(default_factory=dict)
    positions: list[dict[str, Any]] = field(default_factory=list)
    health: dict[str, Any] = field(default_factory=dict)

    @property
    def balanced(self) -> bool:
        return all(w.balanced for w in self.wallets)

    def as_json(self) -> dict[str, Any]:
        return {
            "account": self.account,
            "from": self.start.isoformat(),
            "to": self.end.isoformat(),
            "balanced": self.balanced,
            "wallets": [w.as_json() for w in self.wallets],
            "fees": [{"currency": c, "amount": dec(a)} for c, a in sorted(self.fees.items())],
            "pairs": [
                {
                    "symbol": s,
                    "fills": p["fills"],
                    "volume": dec(p["volume"]),
                    "notional": dec(p["notional"]),
                }
                for s, p in sorted(self.pairs.items())
            ],
            "positions": self.positions,
            "health": self.health,
        }


def build(
    engine: sa.Engine, account: str, start: datetime, end: datetime, tick: Tick | None = None
) -> Statement:
    """The statement of ``account`` for [start, end)."""
    st = Statement(account, start, end)
    step = tick or (lambda n: None)
    with engine.connect() as conn:
        st.wallets = _wallets(conn, account, start, end, step)
        _socket_balances(conn, account, start, end, st.wallets, step)
        _trades(conn, account, start, end, st, step)
        st.positions = _positions(conn, account, start, end)
        st.health = _health(conn, engine, account, start, end, step)
    return st


def _wallets(
    conn: sa.Connection, account: str, start: datetime, end: datetime, step: Tick
) -> list[WalletLine]:
    c = ledgers.c
    lines: dict[tuple[str, str], WalletLine] = {}
    # The balance after the last entry before the period, per wallet and currency.
    before = conn.execution_options(yield_per=5000).execute(
        sa.select(c.wallet, c.currency, c.balance)
        .where(c.account == account, c.mts < start)
        .order_by(c.wallet, c.currency, c.mts, c.id)
    )
    for wallet, currency, balance in before:
        line = lines.setdefault((wallet or "?", currency), WalletLine(wallet or "?", currency))
        line.opening = balance if balance is not None else line.opening
        line.closing = line.opening
        step(1)
    rows = conn.execution_options(yield_per=5000).execute(
        sa.select(c.id, c.wallet, c.currency, c.mts, c.amount, c.balance, c.category)
        .where(c.account == account, c.mts >= start, c.mts < end)
        .order_by(c.wallet, c.currency, c.mts, c.id)
    )
    for r in rows:
        step(1)
        key = (r.wallet or "?", r.currency)
        found = lines.get(key)
        first = found is None or (found.count == 0 and found.closing is None)
        line = found if found is not None else lines.setdefault(key, WalletLine(*key))
        if r.amount is None or r.balance is None:
            line.differences.append(
                {"ledger_id": r.id, "at": _iso(r.mts), "problem": "unreadable amount or balance"}
            )
            continue
        if first:
            line.opening = r.balance - r.amount
            line.closing = line.opening
        expected = (line.closing if line.closing is not None else line.opening) + r.amount
        if expected != r.balance:
            line.differences.append(
                {
                    "ledger_id": r.id,
                    "at": _iso(r.mts),
                    "problem": "balance does not follow from the previous entry",
                    "expected": dec(expected),
                    "balance": dec(r.balance),
                    "by": dec(r.balance - expected),
                }
            )
            # The entry's own balance is what the exchange says; the difference is listed, and
            # the closing check shows it.
        name = group(r.category)
        line.entries[name] = line.entries.get(name, Decimal(0)) + r.amount
        line.count += 1
        line.unknown += r.category is None
        line.closing = r.balance
    return [lines[k] for k in sorted(lines)]


def _iso(at: Any) -> str | None:
    t = utc(at)
    return t.isoformat() if t else None


def _socket_balances(
    conn: sa.Connection,
    account: str,
    start: datetime,
    end: datetime,
    lines: list[WalletLine],
    step: Tick,
) -> None:
    """The socket's last balance in the period and the balance series for the chart."""
    by_key = {(w.wallet, w.currency): w for w in lines}
    h = wallet_history.c
    rows = conn.execution_options(yield_per=5000).execute(
        sa.select(h.wallet_type, h.currency, h.at, h.balance, h.source)
        .where(h.account == account, h.at >= start, h.at < end, h.source.in_(("ws", "wu")))
        .order_by(h.wallet_type, h.currency, h.at, h.ref)
    )
    for r in rows:
        step(1)
        line = by_key.get((r.wallet_type, r.currency))
        if line is None:
            line = by_key[(r.wallet_type, r.currency)] = WalletLine(r.wallet_type, r.currency)
            line.closing = None
            lines.append(line)
        at = utc(r.at)
        if r.balance is None or at is None:
            continue
        line.socket_closing = r.balance
        line.points.append((at, r.balance))
        if len(line.points) > 2 * CHART_POINTS:
            line.points = line.points[::2]  # thin evenly: memory stays bounded
    lines.sort(key=lambda w: (w.wallet, w.currency))


def _trades(
    conn: sa.Connection, account: str, start: datetime, end: datetime, st: Statement, step: Tick
) -> None:
    t = trades.c
    rows = conn.execution_options(yield_per=5000).execute(
        sa.select(t.symbol, t.exec_amount, t.exec_price, t.fee, t.fee_currency).where(
            t.account == account, t.mts_create >= start, t.mts_create < end
        )
    )
    for r in rows:
        step(1)
        pair = st.pairs.setdefault(
            r.symbol or "?", {"fills": 0, "volume": Decimal(0), "notional": Decimal(0)}
        )
        pair["fills"] += 1
        if r.exec_amount is not None:
            pair["volume"] += abs(r.exec_amount)
            if r.exec_price is not None:
                pair["notional"] += abs(r.exec_amount * r.exec_price)
        if r.fee is not None and r.fee_currency:
            st.fees[r.fee_currency] = st.fees.get(r.fee_currency, Decimal(0)) + r.fee


def _positions(
    conn: sa.Connection, account: str, start: datetime, end: datetime, keep: int = 5
) -> list[dict[str, Any]]:
    """The longest positions open during the period (open ones last until its end)."""
    p = positions.c
    rows = conn.execute(
        sa.select(
            p.position_key, p.symbol, p.status, p.amount, p.base_price, p.mts_create, p.mts_update
        ).where(p.account == account, p.mts_create < end)
    )
    found = []
    for r in rows:
        opened = utc(r.mts_create)
        closed = utc(r.mts_update) if r.status == "CLOSED" else end
        if opened is None or closed is None or closed < start:
            continue
        found.append(
            {
                "position": r.position_key,
                "symbol": r.symbol,
                "status": r.status,
                "amount": dec(r.amount),
                "base_price": dec(r.base_price),
                "opened": opened.isoformat(),
                "closed": closed.isoformat() if r.status == "CLOSED" else None,
                "seconds": round((min(closed, end) - max(opened, start)).total_seconds(), 3),
            }
        )
    found.sort(key=lambda x: (-x["seconds"], str(x["position"])))
    return found[:keep]


def _health(
    conn: sa.Connection,
    engine: sa.Engine,
    account: str,
    start: datetime,
    end: datetime,
    step: Tick,
) -> dict[str, Any]:
    s = sessions.c
    count = conn.execute(
        sa.select(sa.func.count()).where(
            s.account == account,
            s.started_at < end,
            sa.or_(s.ended_at.is_(None), s.ended_at >= start),
        )
    ).scalar_one()
    gaps = [
        {
            "from": _iso(g.from_at),
            "to": _iso(g.to_at),
            "seconds": round(float(g.seconds), 3) if g.seconds is not None else None,
            "reason": g.reason,
            "backfilled": bool(g.backfilled),
        }
        for g in conn.execute(
            sa.text(
                "SELECT from_at, to_at, seconds, reason, backfilled FROM session_gaps "
                "WHERE account = :a ORDER BY from_at"
            ),
            {"a": account},
        )
        if _overlaps(utc(g.from_at), utc(g.to_at), start, end)
    ]
    head = conn.execute(
        sa.select(events.c.id, events.c.hash)
        .where(events.c.account == account, events.c.received_at < end)
        .order_by(events.c.id.desc())
        .limit(1)
    ).first()
    head_id = int(head.id) if head is not None else 0
    return {
        "sessions": int(count),
        "gaps": gaps,
        "gap_seconds": round(sum(g["seconds"] or 0 for g in gaps), 3),
        "gaps_not_backfilled": sum(1 for g in gaps if not g["backfilled"]),
        "head": {"id": head_id, "hash": head.hash if head is not None else GENESIS},
        "chain_verified": _chain_ok(engine, account, head_id, step),
    }


def _overlaps(a: datetime | None, b: datetime | None, start: datetime, end: datetime) -> bool:
    return a is not None and b is not None and a < end and b > start


def _chain_ok(engine: sa.Engine, account: str, up_to: int, step: Tick) -> bool:
    """Whether the hash chain verifies from the first row up to ``up_to``."""
    bad, _ = first_bad(EventLog(engine), account, up_to, step)
    return bad is None
