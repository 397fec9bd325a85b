"""The simulator's frames, read by the official Bitfinex Python client (bitfinex-api-py 4.x).

The client runs on asyncio in this thread; the simulator runs on trio in another. The client
must authenticate and its handlers must receive every account message kind; folding what it
received must give the simulator's true state.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from bfxapi import Client

from recorder.protocol import classify
from tests.helpers import EVENTS, SimThread, _fold

API_KEY, API_SECRET = "official-client-key", "official-client-secret"


@pytest.mark.slow
def test_official_client_sees_the_simulated_account() -> None:
    received: list[tuple[str, Any]] = []
    authenticated: list[dict[str, Any]] = []

    with SimThread(seed=7, rate=300.0, api_keys={API_KEY: API_SECRET}) as st:
        client = Client(API_KEY, API_SECRET, wss_host=f"ws://127.0.0.1:{st.port}/ws/2")
        for name in EVENTS:
            client.wss.on(name, lambda data, _n=name: received.append((_n, data)))
        client.wss.on("authenticated", lambda msg: authenticated.append(msg))

        async def drive() -> None:
            task = asyncio.create_task(client.wss.start())
            for _ in range(200):
                await asyncio.sleep(0.05)
                if {n for n, _ in received} >= set(EVENTS):
                    break
            st.call(st.sim.pause)
            # A last wallet update (the state unchanged) after everything else: once the client
            # has handled as many as were sent, every frame before it has arrived too.
            wallet = next(p for a, p in st.sim.model.snapshots() if a == "ws")[0]
            st.run(st.sim.broadcast, [("wu", wallet)])
            sent = sum(1 for f in st.sim.sent_log if classify(f.text).kind == "wu")
            for _ in range(400):
                if sum(1 for n, _ in received if n == "wallet_update") >= sent:
                    break
                await asyncio.sleep(0.025)
            await client.wss.close()
            await asyncio.wait_for(task, 10)

        asyncio.run(drive())
        truth = st.sim.truth()

    assert authenticated and authenticated[0]["userId"] == truth["user_id"]
    missing = set(EVENTS) - {n for n, _ in received}
    assert not missing, f"handlers never called: {sorted(missing)}"

    state = _fold(received)
    assert {o["id"]: o["amount"] for o in truth["orders"]} == {
        i: o.amount for i, o in state["orders"].items()
    }
    for o in truth["orders"]:
        got = state["orders"][o["id"]]
        assert (got.symbol, got.price, got.order_status) == (
            o["symbol"],
            o["price"],
            o["order_status"],
        )
    assert {p["symbol"]: (p["position_id"], p["amount"]) for p in truth["positions"]} == {
        s: (p.position_id, p.amount) for s, p in state["positions"].items()
    }
    assert {(w["wallet_type"], w["currency"]): w["balance"] for w in truth["wallets"]} == {
        k: w.balance for k, w in state["wallets"].items()
    }
    truth_trades = {t["id"]: t for t in truth["trades"]}
    assert state["trades"]
    for trade_id, trade in state["trades"].items():
        t = truth_trades[trade_id]
        assert (trade.exec_amount, trade.exec_price, trade.fee, trade.fee_currency) == (
            t["exec_amount"],
            t["exec_price"],
            t["fee"],
            t["fee_currency"],
        )
