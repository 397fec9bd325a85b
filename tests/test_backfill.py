"""The REST gap backfill against the simulator's REST API, on SQLite and PostgreSQL."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import sqlalchemy as sa
import trio

from recorder.projections.projector import rebuild
from recorder.simulator.server import Simulator
from recorder.store.eventlog import EventLog
from recorder.store.schema import backfills, ledgers, orders, positions, reconciliations, trades
from tests.helpers import drain, progressed, wait_until
from tests.test_daemon import KEY, SECRET, start_recording
from tests.test_projections import everything


def dec(value: Any) -> Decimal | None:
    return None if value is None else Decimal(repr(value))


def rows(engine: sa.Engine, table: sa.Table) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(sa.select(table)).mappings()]


async def gap_while_trading(sim: Simulator, recorder: Any, engine: sa.Engine, steps: int) -> None:
    """The connection drops and cannot come back while the account trades; then it does."""
    sim.pause()
    await drain(sim, recorder, engine)
    sim.refuse()
    await sim.inject("drop")
    await wait_until(lambda: not sim.connections, "the recorder is disconnected")
    await sim.advance(steps)  # nobody hears this
    auth = sim.auth_events
    sim.refuse(0)
    with trio.fail_after(20):
        await auth.wait()


def reconnect_backfills_done(recorder: Any, count: int = 1) -> bool:
    done = recorder.backfillers["main"].completed
    return sum(1 for w in done if w.reason == "reconnect") >= count


async def test_a_gap_costs_the_audit_trail_nothing(engine: sa.Engine) -> None:
    sim = Simulator(seed=71, rate=300, api_keys={KEY: SECRET}, connection_limit=None)
    async with trio.open_nursery() as nursery:
        rest_port = await nursery.start(sim.serve_rest)
        recorder = await start_recording(nursery, sim, engine, rest_port=rest_port)
        await progressed(recorder, 150)
        await gap_while_trading(sim, recorder, engine, steps=120)
        await wait_until(lambda: reconnect_backfills_done(recorder), "the backfill")
        await drain(sim, recorder, engine)
        recorder.stop()
        with trio.fail_after(20):
            await recorder.finished.wait()
        nursery.cancel_scope.cancel()

    model = sim.model
    # Every trade, with its fee, including those filled while the recorder was away.
    got = {r["id"]: r for r in rows(engine, trades)}
    assert set(got) == set(model.trades)
    for tid, t in model.trades.items():
        assert (got[tid]["fee"], got[tid]["fee_currency"]) == (dec(t["fee"]), t["fee_currency"])
        assert got[tid]["exec_amount"] == dec(t["exec_amount"])
    # Every order's true outcome: closed ones with the final status the exchange reported.
    by_id = {r["id"]: r for r in rows(engine, orders)}
    for oid, o in model.closed_orders.items():
        assert by_id[oid]["is_open"] is False, oid
        assert by_id[oid]["order_status"] == o["order_status"], oid
    assert {i for i, r in by_id.items() if r["is_open"]} == set(model.orders)
    # The ledger, entry for entry (the wallet from the description's suffix).
    book = {r["id"]: r for r in rows(engine, ledgers)}
    assert set(book) == {e["id"] for e in model.ledger}
    for e in model.ledger:
        row = book[e["id"]]
        assert (row["amount"], row["balance"]) == (dec(e["amount"]), dec(e["balance"]))
        assert row["wallet"] == e["description"].rsplit(" on wallet ", 1)[1]
    # Positions closed in the gap are CLOSED.
    pos = {r["position_id"]: r for r in rows(engine, positions)}
    for pid in model.closed_positions:
        assert pos[pid]["status"] == "CLOSED", pid
    # What the reconnect's snapshots revealed is explained by a REST answer, every row.
    found = rows(engine, reconciliations)
    assert found, "the gap should have changed something"
    unexplained = [
        (r["projection"], r["key"], r["problem"]) for r in found if r["explained_by"] is None
    ]
    assert unexplained == []
    kinds = dict(EventLog(engine).count_by_kind("main"))
    assert kinds.get("rest.trades-hist") and kinds.get("rest.ledgers-hist")
    windows = rows(engine, backfills)
    assert any(w["reason"] == "reconnect" and w["complete"] is True for w in windows)
    # Rebuild gives the same rows.
    live = everything(engine)
    rebuild(engine, ["main"])
    assert everything(engine) == live


async def test_rest_down_window_stays_incomplete_then_completes(engine: sa.Engine) -> None:
    sim = Simulator(seed=72, rate=300, api_keys={KEY: SECRET}, connection_limit=None)
    async with trio.open_nursery() as nursery:
        rest_port = await nursery.start(sim.serve_rest)
        recorder = await start_recording(nursery, sim, engine, rest_port=rest_port)
        await progressed(recorder, 100)
        sim.rest_fault = "down"
        await gap_while_trading(sim, recorder, engine, steps=60)
        backfiller = recorder.backfillers["main"]
        await wait_until(lambda: bool(backfiller.incomplete), "a window left incomplete")
        sim.resume()
        await progressed(recorder, 100)  # the socket keeps recording meanwhile
        sim.rest_fault = "rate-limit"
        before = len(sim.rest_requests)
        await wait_until(lambda: len(sim.rest_requests) > before + 1, "retried while limited")
        sim.rest_fault = None
        await wait_until(lambda: reconnect_backfills_done(recorder), "the window completes")
        sim.pause()
        await drain(sim, recorder, engine)
        recorder.stop()
        with trio.fail_after(20):
            await recorder.finished.wait()
        nursery.cancel_scope.cancel()
    windows = [w for w in rows(engine, backfills) if w["reason"] == "reconnect"]
    assert windows[0]["complete"] is False and windows[-1]["complete"] is True
    assert len({(w["window_from"], w["window_to"]) for w in windows}) == 1  # the same window
    kinds = EventLog(engine).count_by_kind("main")
    assert kinds.get("rest.error", 0) > 0
    got = {r["id"] for r in rows(engine, trades)}
    assert got == set(sim.model.trades)  # all there, once (the table is keyed by id)
