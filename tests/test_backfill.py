"""The REST gap backfill against the simulator's REST API, on SQLite and PostgreSQL."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import orjson
import sqlalchemy as sa
import trio
from bfxapi import Client

from recorder import logs
from recorder.audit.verify import verify
from recorder.config import DatabaseConfig
from recorder.projections.base import Event, Output
from recorder.projections.events import LedgerFold
from recorder.projections.rebuild import rebuild
from recorder.projections.values import parse_frame
from recorder.simulator.server import Simulator
from recorder.store.engine import create_engine
from recorder.store.eventlog import EventLog
from recorder.store.schema import backfills, ledgers, orders, positions, reconciliations, trades
from recorder.upstream.backfill import Backfiller, Progress, Window
from recorder.upstream.rest import RestClient
from tests.helpers import (
    KEY,
    SECRET,
    SimThread,
    drain,
    everything,
    make_recorder,
    progressed,
    rest_client,
    session_rows,
    start_recording,
    wait_until,
)


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
    report = verify(engine, "main")
    assert report.ok
    assert not [f for f in report.findings if f.what in ("reconciliation", "backfill-incomplete")]
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
        sim.rest.fault = "down"
        await gap_while_trading(sim, recorder, engine, steps=60)
        backfiller = recorder.backfillers["main"]
        await wait_until(lambda: bool(backfiller.incomplete), "a window left incomplete")
        sim.resume()
        await progressed(recorder, 100)  # the socket keeps recording meanwhile
        sim.rest.fault = "rate-limit"
        before = len(sim.rest.requests)
        await wait_until(lambda: len(sim.rest.requests) > before + 1, "retried while limited")
        sim.rest.fault = None
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
    # The incomplete attempt is not a gap any more: the same window completed later.
    assert not [f for f in verify(engine, "main").findings if f.what == "backfill-incomplete"]


async def test_a_clock_stepped_back_during_a_gap_still_backfills_the_gap(
    engine: sa.Engine,
) -> None:
    """The wall clock steps back 600 s while the connection is down: the reconnect's window
    (computed from wall-clock times) is widened by the step and still covers the gap's
    trades; the step is marked in the log, and verify says the session times are out of
    order. (Without the widening the window ended 8 minutes before it began.)"""
    sim = Simulator(seed=79, rate=300, api_keys={KEY: SECRET}, connection_limit=None)
    offset = [0.0]

    def wall() -> datetime:
        return datetime.now(UTC) + timedelta(seconds=offset[0])

    async with trio.open_nursery() as nursery:
        rest_port = await nursery.start(sim.serve_rest)
        recorder = await start_recording(nursery, sim, engine, rest_port=rest_port, wall=wall)
        await progressed(recorder, 100)
        sim.pause()
        await drain(sim, recorder, engine)
        sim.refuse()
        await sim.inject("drop")
        await wait_until(lambda: not sim.connections, "the recorder is disconnected")
        offset[0] = -600.0  # NTP steps the clock back 10 minutes
        await sim.advance(60)  # trades nobody hears
        auth = sim.auth_events
        sim.refuse(0)
        with trio.fail_after(20):
            await auth.wait()
        await wait_until(lambda: reconnect_backfills_done(recorder), "the reconnect's window")
        sim.pause()
        await drain(sim, recorder, engine)
        recorder.stop()
        with trio.fail_after(20):
            await recorder.finished.wait()
        nursery.cancel_scope.cancel()
    got = {r["id"] for r in rows(engine, trades)}
    assert got == set(sim.model.trades)  # the gap's trades too
    steps = [
        orjson.loads(e.frame)
        for e in EventLog(engine).iterate("main")
        if e.kind == "recorder.clock-step"
    ]
    assert steps and -605 < steps[0]["seconds"] < -595
    window = next(w for w in rows(engine, backfills) if w["reason"] == "reconnect")
    assert window["window_to"] - window["window_from"] > timedelta(minutes=10)
    assert any(f.what == "session-times" for f in verify(engine, "main").findings)


def ledger_entry(n: int, mts: int) -> dict[str, Any]:
    return {
        "id": 9_000 + n,
        "currency": "USD",
        "wallet": None,
        "mts": mts,
        "amount": 1.0,
        "balance": float(n),
        "description": f"Entry {n} on wallet exchange",
    }


def simulator_client(
    port: int, http: httpx.AsyncClient, emit: Callable[[Any], Awaitable[None]]
) -> RestClient:
    """The recorder's REST client on the simulator's REST port: unpaced, one try, its own
    increasing nonces."""
    return rest_client(f"http://127.0.0.1:{port}/v2", http, emit)


async def page_window(sim: Simulator, port: int, start: int, end: int) -> tuple[bool, list[Any]]:
    """Backfill one window of the simulator's REST with the recorder's client; returns
    whether it completed and the events it logged."""
    logged: list[Any] = []

    async def emit(item: Any) -> None:
        logged.append(item)

    async with httpx.AsyncClient() as http:
        client = simulator_client(port, http, emit)
        t0, t1 = (datetime.fromtimestamp(t / 1000, UTC) for t in (start, end))
        backfiller = Backfiller(client, emit, page_limits=sim.rest.page_max)
        complete = await backfiller.backfill(Window(t0, t1, "manual"))
    return complete, logged


async def test_paging_rows_that_share_a_millisecond_across_pages() -> None:
    """Page maximum 4; groups of rows share one millisecond across page boundaries: every row
    arrives, the repeats fold into one row each; a full page all in one millisecond cannot
    progress and leaves the window incomplete rather than skip rows."""
    sim = Simulator(seed=73, rate=0, api_keys={KEY: SECRET}, connection_limit=None)
    sim.rest.page_max = {"ledgers-hist": 4}
    stamps = [1000, 1000, 1000, 1001, 1001, 1002, 1002, 1002, 1003, 1004, 1004, 1005, 1005]
    sim.model.ledger = [ledger_entry(n, t) for n, t in enumerate(stamps)]
    async with trio.open_nursery() as nursery:
        port = await nursery.start(sim.serve_rest)
        complete, logged = await page_window(sim, port, 1000, 1005)
        assert complete
        answers = [e for e in logged if e.kind == "rest.ledgers-hist"]
        assert len(answers) >= 4  # it took several pages
        fold, out = LedgerFold(), Output()
        seen: list[int] = []
        for n, answer in enumerate(answers):
            payload = parse_frame(answer.frame)
            seen += [row[0] for row in payload]
            fold.apply(Event(n + 1, answer.kind, payload), out)
        assert len(seen) > len(set(seen))  # groups at a page's oldest millisecond came twice
        assert set(out.inserts_if_absent["ledgers"]) == {(e["id"],) for e in sim.model.ledger}
        requests = [orjson.loads(body) for path, body in sim.rest.requests if "ledgers" in path]
        assert all(r["limit"] == 4 for r in requests)  # always the page maximum, explicitly

        sim.model.ledger = [ledger_entry(n, 2000) for n in range(5)]  # 5 rows, one ms
        complete, logged = await page_window(sim, port, 2000, 2000)
        assert not complete
        end = [orjson.loads(e.frame) for e in logged if e.kind == "recorder.backfill-end"]
        assert end[-1]["complete"] is False
        nursery.cancel_scope.cancel()


async def test_a_retry_asks_only_what_failed_and_costs_the_log_little() -> None:
    """One endpoint down (a proxy's 5 KB error page) for six attempts of one window: the
    pages already answered are not asked again, the repeated error page is logged as a
    reference, and the window adds less than 50 KB to the log (it used to store every page
    and the error page again at every retry)."""
    sim = Simulator(seed=78, rate=0, api_keys={KEY: SECRET}, connection_limit=None)
    await sim.advance(100)
    sim.rest.down_paths = {"auth/r/movements/hist"}  # the last endpoint a window pages
    logged: list[Any] = []

    async def emit(item: Any) -> None:
        logged.append(item)

    def size() -> int:
        return sum(len(e.frame) for e in logged)

    async with trio.open_nursery() as nursery, httpx.AsyncClient() as http:
        port = await nursery.start(sim.serve_rest)
        client = simulator_client(port, http, emit)
        backfiller = Backfiller(client, emit, page_limits=sim.rest.page_max)
        window = Window(datetime(2020, 1, 1, tzinfo=UTC), datetime.now(UTC), "reconnect")
        assert not await backfiller.backfill(window)
        first, asked_first = size(), len(sim.rest.requests)
        assert asked_first == 9  # every endpoint answered before the one that is down
        for _ in range(5):
            assert not await backfiller.backfill(window)
        retried = [path for path, _ in sim.rest.requests[asked_first:]]
        assert set(retried) == {"/v2/auth/r/movements/hist"}  # only what failed
        errors = [orjson.loads(e.frame) for e in logged if e.kind == "rest.error"]
        assert errors[0]["body"] and len(errors[0]["body"]) > 3000
        assert all(e["body"] is None and e["repeat_of"] == errors[0]["sha256"] for e in errors[1:])
        per_retry = (size() - first) / 5
        print(f"first attempt {first} bytes, then {per_retry:.0f} bytes per retry")
        assert per_retry < 1000
        sim.rest.down_paths.clear()
        assert await backfiller.backfill(window)  # completes with what was left
        assert size() < 50_000
        assert [p for p, _ in sim.rest.requests[len(retried) + asked_first :]] == [
            "/v2/auth/r/movements/hist"
        ]
        nursery.cancel_scope.cancel()


def test_an_incomplete_window_backs_off_to_an_hour() -> None:
    backfiller = Backfiller(None, None, retry_every=60.0)  # type: ignore[arg-type]
    window = Window(datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 2, tzinfo=UTC), "manual")
    delays = []
    for attempts in range(1, 10):
        backfiller._progress[window] = Progress(attempts=attempts)
        delays.append(backfiller.retry_delay(window))
    assert delays == [60, 120, 240, 480, 960, 1920, 3600, 3600, 3600]


async def test_nonces_increase_across_rest_websocket_and_a_restart_with_the_clock_back(
    engine: sa.Engine,
) -> None:
    sim = Simulator(seed=74, rate=300, api_keys={KEY: SECRET}, connection_limit=None)
    now = time.time()
    async with trio.open_nursery() as nursery:
        rest_port = await nursery.start(sim.serve_rest)
        for clock in (lambda: now, lambda: now - 3600):  # the second run: clock an hour back
            recorder = await start_recording(
                nursery, sim, engine, rest_port=rest_port, nonce_clock=clock
            )
            await progressed(recorder, 50)
            done = recorder.backfillers["main"].completed_count
            await gap_while_trading(sim, recorder, engine, steps=20)
            await wait_until(
                lambda r=recorder, d=done: r.backfillers["main"].completed_count > d, "backfill"
            )
            recorder.stop()
            with trio.fail_after(20):
                await recorder.finished.wait()
            sim.resume()
        nursery.cancel_scope.cancel()
    used = sim.auth.accepted[KEY]
    assert len(used) > 20  # REST requests and WebSocket auths, interleaved
    assert used == sorted(set(used))  # strictly increasing, none reused
    assert sim.auth.refused == []
    assert "nonce" not in "".join(
        e.frame for e in EventLog(engine).iterate("main") if e.kind == "rest.error"
    )


async def test_a_key_that_can_write_is_refused_unless_allowed(engine: sa.Engine) -> None:
    stream = io.StringIO()
    logs.setup("text", "INFO", stream=stream)
    sim = Simulator(seed=75, rate=50, api_keys={KEY: SECRET}, connection_limit=None)
    sim.rest.permissions = [["orders", 1, 1], ["history", 1, 0], ["withdraw", 0, 1]]
    try:
        async with trio.open_nursery() as nursery:
            rest_port = await nursery.start(sim.serve_rest)
            ws_port = await nursery.start(sim.serve)
            refused = make_recorder(engine, ws_port, rest_port=rest_port)
            with trio.fail_after(20):
                code = await refused.run()
            assert code == 2
            # The check ran beside the session (it never holds up recording): whatever
            # session had started ended for that reason, and what it recorded is kept.
            ends = [r.end_reason for r in session_rows(engine)]
            assert all(end is not None for end in ends)
            if ends:
                assert ends[-1] == "error: key has write permissions (orders, withdraw)"
            assert refused.status["main"].stopped is not None
            allowed = make_recorder(engine, ws_port, rest_port=rest_port, allow_write_key=True)
            auth = sim.auth_events
            await nursery.start(allowed.run)
            with trio.fail_after(20):
                await auth.wait()
            # The check runs after the first auth, beside the session.
            await wait_until(
                lambda: "the API key can write (allow_write_key = true)" in stream.getvalue(),
                "the permission check",
            )
            allowed.stop()
            await allowed.finished.wait()
            nursery.cancel_scope.cancel()
    finally:
        logging.getLogger().handlers.clear()
    text = stream.getvalue()
    assert "its API key has WRITE permission for orders, withdraw" in text
    assert "create a read-only key" in text and "allow_write_key = true" in text
    assert "the API key can write (allow_write_key = true)" in text
    assert EventLog(engine).count_by_kind("main").get("rest.permissions") == 2  # logged


def test_the_official_client_reads_the_simulated_history() -> None:
    with SimThread(seed=76, rate=0, api_keys={KEY: SECRET}, connection_limit=None) as st:
        st.run(st.sim.advance, 150)
        port = st.run(lambda: st.nursery.start(st.sim.serve_rest))
        client = Client(KEY, SECRET, rest_host=f"http://127.0.0.1:{port}/v2")
        model = st.sim.model
        trades_ = client.rest.auth.get_trades_history(limit=2500)
        assert {t.id for t in trades_} == set(model.trades)
        assert all(t.fee == model.trades[t.id]["fee"] for t in trades_)
        orders_ = client.rest.auth.get_orders_history(limit=2500)
        assert {o.id: o.order_status for o in orders_} == {
            i: o["order_status"] for i, o in model.closed_orders.items()
        }
        ledger = client.rest.auth.get_ledgers(limit=2500)
        assert {e.id for e in ledger} == {e["id"] for e in model.ledger}
        assert {p.position_id for p in client.rest.auth.get_positions_history(limit=50)} == set(
            model.closed_positions
        )
        assert {f.id for f in client.rest.auth.get_funding_trades_history(limit=1000)} == set(
            model.funding_trades
        )
        assert len(client.rest.auth.get_wallets()) == len(model.wallets)


def test_backfill_command_fetches_history_before_recording_began(tmp_path: Any) -> None:
    """`bfx-recorder backfill --from T`: a manual window into a database that recorded
    nothing yet; then `verify` is clean and the tables hold the history."""
    with SimThread(seed=77, rate=0, api_keys={KEY: SECRET}, connection_limit=None) as st:
        st.run(st.sim.advance, 120)
        port = st.run(lambda: st.nursery.start(st.sim.serve_rest))
        st.sim.rest.rate_limit = None
        db = tmp_path / "bf.db"
        cfg = tmp_path / "bf.toml"
        cfg.write_text(
            f'[database]\nurl = "sqlite:///{db}"\n[[accounts]]\nname = "main"\n'
            'api_key_env = "BF_KEY"\napi_secret_env = "BF_SECRET"\n'
            f'rest_url = "http://127.0.0.1:{port}/v2"\n'
        )
        env = {**os.environ, "BF_KEY": KEY, "BF_SECRET": SECRET}
        since = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
        proc = subprocess.run(
            [sys.executable, "-m", "recorder", "backfill", "--config", str(cfg), "--from", since],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        model = st.sim.model
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "main: backfill" in proc.stdout and "complete" in proc.stdout
    assert SECRET not in proc.stdout + proc.stderr
    engine = create_engine(DatabaseConfig(url=f"sqlite:///{db}"))
    assert {r["id"] for r in rows(engine, trades)} == set(model.trades)
    assert {r["id"] for r in rows(engine, ledgers)} == {e["id"] for e in model.ledger}
    windows = rows(engine, backfills)
    assert [(w["reason"], w["complete"], w["session_id"]) for w in windows] == [
        ("manual", True, None)
    ]
    assert verify(engine, "main").ok
    engine.dispose()


async def test_vanished_orders_and_positions_are_asked_for_by_id() -> None:
    """Orders and positions that vanished from the new snapshots, unexplained, are asked for
    by id (the window's time filter may not cover them): the answers carry their final rows."""
    sim = Simulator(seed=78, rate=0, api_keys={KEY: SECRET}, connection_limit=None)
    await sim.advance(150)
    model = sim.model
    gone_orders = sorted(model.closed_orders)[:3]
    gone_positions = sorted(model.closed_positions)[:1]
    assert gone_orders and gone_positions

    async def vanished() -> dict[str, list[int]]:
        return {"orders": gone_orders, "positions": gone_positions}

    logged: list[Any] = []

    async def emit(item: Any) -> None:
        logged.append(item)

    async with trio.open_nursery() as nursery, httpx.AsyncClient() as http:
        port = await nursery.start(sim.serve_rest)
        client = simulator_client(port, http, emit)
        far = datetime(2001, 1, 1, tzinfo=UTC)  # a window in which nothing happened
        window = Window(far, far + timedelta(minutes=1), "reconnect", None, None, vanished)
        assert await Backfiller(client, emit).backfill(window)
        nursery.cancel_scope.cancel()
    asked = [(path, orjson.loads(body)) for path, body in sim.rest.requests if b'"id"' in body]
    assert asked == [
        ("/v2/auth/r/orders/hist", {"id": gone_orders, "limit": 2500}),
        ("/v2/auth/r/positions/audit", {"id": gone_positions, "limit": 250}),
    ]
    by_kind = {e.kind: orjson.loads(e.frame) for e in logged if e.kind.startswith("rest.")}
    assert sorted(r[0] for r in by_kind["rest.orders-hist"]) == gone_orders
    assert [r[11] for r in by_kind["rest.positions-audit"]] == gone_positions


async def test_write_caps_on_a_websocket_auth_stop_the_account(engine: sa.Engine) -> None:
    """The REST permissions said read-only, but an auth reply's caps grant a write: the
    account stops (final) rather than record with a trading key."""
    sim = Simulator(seed=79, rate=50, api_keys={KEY: SECRET}, connection_limit=None)
    sim.caps = {**sim.caps, "orders": {"read": 1, "write": 1}}
    async with trio.open_nursery() as nursery:
        rest_port = await nursery.start(sim.serve_rest)
        port = await nursery.start(sim.serve)
        recorder = make_recorder(engine, port, rest_port=rest_port)
        with trio.fail_after(20):
            code = await recorder.run()
        nursery.cancel_scope.cancel()
    assert code == 2  # every account stopped finally: a configuration to fix, not restart
    stopped = recorder.status["main"].stopped
    assert stopped is not None and stopped.reason == "error: key has write permissions (orders)"
    assert len(sim.auth_requests) == 1  # no retry
