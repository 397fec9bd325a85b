"""What the record learned only from REST, as the frames the exchange would have sent: for a
replay that should see every fill of the day, the gaps' included (off by default).

For each recorded session after the first, the gap before it: every trade whose row came
from a REST answer (the socket never gave it) becomes ``te`` and ``tu``, with the ``wu`` of
each wallet it moved where a ledger entry carries the effect (``fill_effects.ledger_id``:
the entry's balance); every order whose final state came from ``orders/hist`` becomes ``oc``.
They are sent, in exchange-time order, after the next session's auth and before its recorded
frames (they happened before its snapshots); what the socket did not give during the last
session, after its frames (key :data:`AFTER_LAST`); named synthetic in the server's log.
"""

from __future__ import annotations

from bisect import bisect_right
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from recorder.protocol import layouts as L
from recorder.replay.snapshots import dumps
from recorder.store.schema import events, fill_effects, ledgers, orders, trades
from recorder.store.types import utc

AFTER_LAST = 0  # the key of what is sent after the last session's frames (ids start at 1)


def _assign(
    starts: list[datetime], at: datetime | None, frames: dict[int, list[Any]], ids: list[int]
) -> list[Any] | None:
    """The list of the session whose auth is the first after ``at``; :data:`AFTER_LAST` for
    what happened after the last session began (the socket did not give it); None before the
    first session (its snapshots already hold it)."""
    if at is None:
        return None
    k = bisect_right(starts, at)
    if k == 0:
        return None
    return frames.setdefault(ids[k] if k < len(starts) else AFTER_LAST, [])


def gap_frames(
    engine: sa.Engine,
    account: str,
    sessions: list[Any],
    start: datetime | None = None,
    end: datetime | None = None,
) -> dict[int, list[str]]:
    """session id -> the synthetic frames to send before its recorded frames."""
    known = [s for s in sessions if s.authenticated_at is not None]
    starts = [utc(s.authenticated_at) for s in known]
    ids = [s.id for s in known]
    timed: dict[int, list[tuple[datetime, int, str]]] = {}
    order = iter(range(1 << 62))  # ties in time keep the order of the appends
    t, e, fe, lg = trades.c, events.c, fill_effects.c, ledgers.c

    def within(at: datetime | None) -> bool:
        return at is not None and (start is None or at >= start) and (end is None or at < end)

    with engine.connect() as conn:
        fills = conn.execute(
            sa.select(trades)
            .join(events, e.id == t.event_id)
            .where(t.account == account, e.kind.like("rest.%"))
            .order_by(t.mts_create, t.id)
        ).mappings()
        # trade id -> when it was made and where its frames go
        by_trade: dict[Any, tuple[datetime, list[Any]]] = {}
        for row in fills:
            at = utc(row["mts_create"])
            target = _assign(starts, at, timed, ids)  # type: ignore[arg-type]
            if target is None or not within(at):
                continue
            trade = dict(row)
            by_trade[trade["id"]] = (at, target)  # type: ignore[assignment]
            executed = {**trade, "fee": None, "fee_currency": None}
            target.append((at, next(order), dumps([0, "te", L.TRADE.array(executed)])))
            target.append((at, next(order), dumps([0, "tu", L.TRADE.array(trade)])))
        if by_trade:
            moved = conn.execute(
                sa.select(fe.trade_id, lg.wallet, lg.currency, lg.balance, lg.description, lg.mts)
                .join(ledgers, sa.and_(lg.account == fe.account, lg.id == fe.ledger_id))
                # (a funding trade's interest row may share a trade's id: not a fill's effect)
                .where(
                    fe.account == account,
                    fe.trade_id.in_(list(by_trade)),
                    fe.part != "interest",
                )
                .order_by(lg.mts, lg.id)
            )
            for m in moved:
                at, target = by_trade[m.trade_id]
                wallet = {
                    "wallet_type": m.wallet,
                    "currency": m.currency,
                    "balance": m.balance,
                    "unsettled_interest": 0,
                    "available_balance": None,
                    "last_change": m.description,
                    "trade_details": None,
                }
                target.append((at, next(order), dumps([0, "wu", L.WALLET.array(wallet)])))
        closed = conn.execute(
            sa.select(orders)
            .join(events, e.id == orders.c.event_id)
            .where(orders.c.account == account, e.kind == "rest.orders-hist")
            .order_by(orders.c.mts_update, orders.c.id)
        ).mappings()
        for row in closed:
            at = utc(row["mts_update"])
            target = _assign(starts, at, timed, ids)  # type: ignore[arg-type]
            if target is None or not within(at):
                continue
            frame = dumps([0, "oc", L.ORDER.array(dict(row))])
            target.append((at, next(order), frame))
    return {sid: [text for _, _, text in sorted(items)] for sid, items in timed.items()}
