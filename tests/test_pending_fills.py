"""The fill effects' window of pending fills answers a wallet's question as a scan of every
pending trade's rows would (the same rows, in the same order)."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from recorder.projections.fills import PendingFills

WALLETS = [("exchange", "BTC"), ("exchange", "USD"), ("margin", "USD"), ("funding", "USD")]

STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.lists(st.sampled_from(WALLETS), min_size=1, max_size=3)),
        st.tuples(st.just("settle"), st.integers(0, 200)),
        st.tuples(st.just("remove"), st.integers(0, 200)),
        st.tuples(st.just("keep_last"), st.integers(0, 12)),
    ),
    max_size=120,
)


def _scan(trades: OrderedDict[int, list[dict[str, Any]]], wkey: tuple[str, str]) -> list[Any]:
    wallet, currency = wkey
    return [
        r
        for rows in trades.values()
        for r in rows
        if r["wallet_type"] == wallet and r["currency"] == currency and r["attribution"] != "exact"
    ]


@settings(max_examples=300, deadline=None)
@given(STEPS)
def test_a_wallets_unsettled_rows_are_the_scans(steps: list[tuple[str, Any]]) -> None:
    pending, model = PendingFills(), OrderedDict[int, list[dict[str, Any]]]()
    next_trade = 0
    for op, arg in steps:
        if op == "add":
            next_trade += 1
            rows = [
                {"trade_id": next_trade, "wallet_type": w, "currency": c, "attribution": "missing"}
                for w, c in arg
            ]
            for row in rows:
                pending.add(next_trade, row)
            model[next_trade] = rows
        elif op == "settle" and model:
            rows = [r for rs in model.values() for r in rs]
            rows[arg % len(rows)]["attribution"] = "exact"  # changed in place, as the fold does
        elif op == "remove" and model:
            trade = list(model)[arg % len(model)]
            pending.remove(trade)
            del model[trade]
        elif op == "keep_last":
            pending.keep_last(arg)
            while len(model) > arg:
                model.popitem(last=False)
        assert len(pending) == len(model)
        for wkey in WALLETS:
            got, want = pending.unsettled(wkey), _scan(model, wkey)
            assert [id(r) for r in got] == [id(r) for r in want]
        for trade, rows in model.items():
            assert pending.get(trade) is not None
            assert [id(r) for r in pending.get(trade) or []] == [id(r) for r in rows]
    # Nothing of a trade that left is kept for any wallet.
    pending.keep_last(0)
    assert all(pending.unsettled(w) == [] for w in WALLETS)
