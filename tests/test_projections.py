"""Projections folded live from a recorded simulator session, compared with its truth."""

from __future__ import annotations

import random
import threading
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
import trio

from recorder.projections.rebuild import rebuild
from recorder.simulator.server import Simulator
from recorder.store.schema import (
    events,
    projector_checkpoints,
    reconciliations,
)
from tests.helpers import (
    KEY,
    SECRET,
    drain,
    everything,
    progressed,
    reauth,
    recorded_on_last_session,
    start_recording,
    table_rows,
    wait_until,
)


def dec(value: Any) -> Any:
    """The simulator's float as the exact decimal its frame text carries."""
    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, int) and not isinstance(value, bool):
        return Decimal(value)
    return value


def assert_matches_truth(engine: sa.Engine, truth: dict[str, Any], phase: str = "") -> None:
    orders = {r["id"]: r for r in table_rows(engine, "orders") if r["is_open"]}
    truth_ids = {o["id"] for o in truth["orders"]}
    trail: list[Any] = []
    if set(orders) != truth_ids:
        with engine.connect() as conn:
            trail = [
                (r.id, r.session_id, r.kind, r.frame[:60])
                for r in conn.execute(
                    sa.select(events.c.id, events.c.session_id, events.c.kind, events.c.frame)
                )
                if any(str(k) in r.frame for k in set(orders) ^ truth_ids)
            ]
    assert set(orders) == truth_ids, (
        phase,
        "projected only:",
        set(orders) - truth_ids,
        "truth only:",
        truth_ids - set(orders),
        trail,  # every event that mentions the differing orders
    )
    for o in truth["orders"]:
        got = orders[o["id"]]
        for col in (
            "symbol",
            "amount",
            "amount_orig",
            "price",
            "order_status",
            "order_type",
            "cid",
            "flags",
        ):
            assert got[col] == dec(o[col]), (phase, o["id"], col, got, o)
    positions = {
        r["position_id"]: r for r in table_rows(engine, "positions") if r["status"] == "ACTIVE"
    }
    assert set(positions) == {p["position_id"] for p in truth["positions"]}
    for p in truth["positions"]:
        for col in ("symbol", "amount", "base_price", "pl", "leverage"):
            assert positions[p["position_id"]][col] == dec(p[col])
    wallets = {(r["wallet_type"], r["currency"]): r for r in table_rows(engine, "wallets")}
    assert set(wallets) == {(w["wallet_type"], w["currency"]) for w in truth["wallets"]}
    for w in truth["wallets"]:
        assert wallets[(w["wallet_type"], w["currency"])]["balance"] == dec(w["balance"])


@pytest.mark.parametrize("seed", [101, 202])
async def test_live_projections_equal_truth_and_reconcile_gaps(
    engine: sa.Engine, seed: int
) -> None:
    rng = random.Random(seed)
    sim = Simulator(
        seed=seed, rate=300, api_keys={KEY: SECRET}, connection_limit=None, close_after_20051=0.05
    )
    async with trio.open_nursery() as nursery:
        recorder = await start_recording(nursery, sim, engine)
        await progressed(recorder, 100)
        # Random faults that lose nothing the snapshots do not repair.
        for fault in rng.sample(["malformed", "seq-repeat", "burst", "truncated"], 3):
            await sim.inject(fault, 200 if fault == "burst" else None)
            await progressed(recorder, 50)

        # A clean reconnect (nothing happens while disconnected): no reconciliation rows.
        sim.pause()
        await drain(sim, recorder, engine)
        await reauth(sim, rng.choice(["drop", "info-20051", "drop-silent"]))
        await drain(sim, recorder, engine)
        with engine.connect() as conn:
            found = conn.execute(sa.select(reconciliations)).all()
        assert found == []
        assert_matches_truth(engine, sim.truth(), "clean")

        # A gap: the account trades while the recorder cannot connect.
        await sim.advance(60)
        await drain(sim, recorder, engine)
        before = sim.truth()
        sim.refuse()
        await sim.inject(rng.choice(["drop", "drop-silent"]))
        await wait_until(lambda: not sim.connections, "the recorder is disconnected")
        await sim.advance(60)  # the account trades; nobody hears it
        after = sim.truth()
        auth = sim.auth_events
        sim.refuse(0)
        with trio.fail_after(20):
            await auth.wait()  # reconnected: fresh snapshots
        await drain(sim, recorder, engine)
        recorder.stop()
        await recorder.finished.wait()
        nursery.cancel_scope.cancel()

    assert_matches_truth(engine, after, "after gap")
    # The orders reconciliation says exactly what the gap hid.
    b = {o["id"]: o for o in before["orders"]}
    a = {o["id"]: o for o in after["orders"]}
    expected = {(str(k), "missing") for k in a.keys() - b.keys()}
    expected |= {(str(k), "unexpected") for k in b.keys() - a.keys()}
    expected |= {(str(k), "changed") for k in a.keys() & b.keys() if a[k] != b[k]}
    with engine.connect() as conn:
        got = {
            (r.key, r.problem)
            for r in conn.execute(
                sa.select(reconciliations).where(reconciliations.c.projection == "orders")
            )
        }
    assert got == expected
    assert expected, "the gap should have changed some orders"

    # Rebuilding from scratch gives the same rows, row for row.
    live = everything(engine)
    rebuild(engine, ["main"])
    assert everything(engine) == live
    rebuild(engine, ["main"], batch=7)
    assert everything(engine) == live


async def test_trades_fees_and_stale_flag(engine: sa.Engine) -> None:
    sim = Simulator(seed=303, rate=300, api_keys={KEY: SECRET}, connection_limit=None)
    sim.pause()  # no trade before the recorder listens: trades have no snapshot
    async with trio.open_nursery() as nursery:
        recorder = await start_recording(nursery, sim, engine)
        await sim.advance(200)  # the account trades while the recorder listens
        await drain(sim, recorder, engine)
        recorder.stop()
        await recorder.finished.wait()
        nursery.cancel_scope.cancel()
    truth = sim.truth()
    trades = {r["id"]: r for r in table_rows(engine, "trades")}
    assert len(trades) == len(truth["trades"]) > 10
    for t in truth["trades"]:
        row = trades[t["id"]]
        assert (row["fee"], row["fee_currency"], row["exec_amount"], row["order_id"]) == (
            dec(t["fee"]),
            t["fee_currency"],
            dec(t["exec_amount"]),
            t["order_id"],
        )
    # Shutdown wrote a disconnected marker: the snapshot projections are stale now.
    with engine.connect() as conn:
        stale = dict(
            conn.execute(
                sa.select(projector_checkpoints.c.projector, projector_checkpoints.c.stale)
            ).all()
        )
        top = conn.execute(sa.select(sa.func.max(events.c.id))).scalar()
        cps = set(conn.execute(sa.select(projector_checkpoints.c.event_id)).scalars())
    assert stale["orders"] and stale["wallets"] and not stale["trades"]
    assert cps == {top}  # every projector folded the whole log
    bu = table_rows(engine, "balance_info")
    assert bu and bu[0]["aum"] == dec(truth["balance_info"]["aum"])
    margin = {r["margin_key"]: r for r in table_rows(engine, "margin_info")}
    assert margin["base"]["margin_balance"] == dec(truth["margin_info"][0]["margin_balance"])


async def test_one_process_many_accounts_live_equals_rebuild(
    engine: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Several accounts in one process are folded together (one read per pool step for the
    accounts near the writer's mark, one write per table): each account's rows and
    checkpoints are what a rebuild of that account alone gives."""
    from recorder.config import (
        AccountConfig,
        Config,
        Credentials,
        DatabaseConfig,
        Secret,
        WriterConfig,
    )
    from recorder.daemon import Recorder
    from recorder.store.database import Database
    from recorder.store.eventlog import EventLog
    from tests.helpers import settle

    together = 0
    read_accounts = EventLog.read_accounts

    def counted(self: EventLog, *args: Any, **kw: Any) -> Any:
        nonlocal together
        together += 1
        return read_accounts(self, *args, **kw)

    monkeypatch.setattr(EventLog, "read_accounts", counted)
    names = ["a1", "a2", "a3"]
    sims = {
        n: Simulator(seed=i, rate=200, api_keys={KEY: SECRET}, connection_limit=None)
        for i, n in enumerate(names, start=31)
    }
    async with trio.open_nursery() as nursery:
        ports = {n: await nursery.start(sim.serve) for n, sim in sims.items()}
        accs = [
            (
                AccountConfig(name=n, url=f"ws://127.0.0.1:{ports[n]}/ws/2", backfill=False),
                Credentials(Secret(KEY), Secret(SECRET)),
            )
            for n in names
        ]
        cfg = Config(
            database=DatabaseConfig(url=str(engine.url)),
            writer=WriterConfig(batch_max_ms=5, unavailable_timeout_s=5),
        )
        recorder = Recorder(cfg, accs, Database(engine), connection_limit=(100, 1.0))
        await nursery.start(recorder.run)
        await progressed(recorder, 600)
        for sim in sims.values():
            sim.pause()
            await sim.settled()

        def all_recorded() -> bool:
            return all(
                recorded_on_last_session(engine, n) == len(sim.frames_for(sim.connection_count))
                for n, sim in sims.items()
            )

        await wait_until(all_recorded, "every account recorded everything sent")
        for n in names:
            await settle(recorder, n)
        recorder.stop()
        await recorder.finished.wait()
        nursery.cancel_scope.cancel()

    assert together > 0, "the accounts were never read together"
    live = {n: everything(engine, n) for n in names}
    assert all(live[n]["orders"] and live[n]["wallets"] for n in names)
    assert live["a1"]["orders"] != live["a2"]["orders"]
    for n in names:
        rebuild(engine, [n])
        assert everything(engine, n) == live[n], n

    # The pool from scratch, small pages, every account due at every step: the same rows.
    from recorder.projections.projector import AccountProjector, ProjectionPool
    from recorder.projections.registry import FOLDS
    from recorder.projections.writing import clear_projection

    for n in names:
        for name in FOLDS:
            clear_projection(engine, name, n)
    log = EventLog(engine)
    marks = {n: log.high_water(n) for n in names}
    pool = ProjectionPool(engine, [AccountProjector(engine, n, batch=40) for n in names])
    # While no fold's flags change, a step moves an account's checkpoints with one UPDATE.
    moves: list[bool] = []
    position = AccountProjector.position

    def noted(self: AccountProjector, *args: Any) -> Any:
        moves.append(position(self, *args).moved_only)
        return position(self, *args)

    monkeypatch.setattr(AccountProjector, "position", noted)
    steps = 0
    while any(p.checkpoint < marks[n] for n, p in pool.projectors.items()):
        pool.step(names, marks)
        steps += 1
    assert steps > 10
    assert any(moves) and not all(moves), moves
    for n in names:
        assert everything(engine, n) == live[n], n


async def test_stand_back_waits_for_the_writer_at_most_so_long(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The projectors wait while the writer is behind: until a commit leaves it no longer
    behind, or for ``longest`` seconds at the most; not at all when it is not behind."""
    from recorder.projections.live import stand_back

    queued = {"n": 0}
    committed = trio.Event()

    async def wait_any(timeout: float) -> bool:
        with trio.move_on_after(timeout):
            await committed.wait()
            return True
        return False

    def behind() -> bool:
        return queued["n"] > 0

    assert await stand_back(behind, wait_any, 5.0) is False
    assert trio.current_time() == 0

    async def commit_after(seconds: float) -> None:
        nonlocal committed
        await trio.sleep(seconds)
        queued["n"] = 0
        committed.set()
        committed = trio.Event()

    queued["n"] = 10
    async with trio.open_nursery() as nursery:
        nursery.start_soon(commit_after, 1.5)
        assert await stand_back(behind, wait_any, 5.0) is True
        assert trio.current_time() == pytest.approx(1.5)

    queued["n"] = 10  # the writer stays behind: the projectors fold anyway after 5 s
    start = trio.current_time()
    assert await stand_back(behind, wait_any, 5.0) is True
    assert trio.current_time() - start == pytest.approx(5.0)


async def test_the_writer_is_behind_in_a_burst_its_queue_does_not_show(
    engine: sa.Engine, mock_clock: trio.testing.MockClock
) -> None:
    """A database that commits fast keeps the writer's queue short in a burst (PostgreSQL:
    a few dozen frames) while projection rounds slow the receive loops: so the writer also
    counts as behind while its last batch, committed just now, took frames in at
    ``BURST_FRAMES_PER_S`` or faster; not at steady rates, not once the burst is quiet."""
    from recorder.config import WriterConfig
    from recorder.store.database import Database
    from recorder.writer import BURST_FRAMES_PER_S, BURST_QUIET, Writer
    from tests.helpers import ev

    batch = 600
    writer = Writer(Database(engine), WriterConfig(batch_max_frames=batch, batch_max_ms=20))
    sent = 0

    async def commit_a_batch_after(seconds: float) -> None:
        nonlocal sent
        mock_clock.jump(seconds)
        for _ in range(batch):  # a full batch at once: committed without waiting for more
            sent += 1
            writer.send_channel.send_nowait(ev("main", sent))
        while writer.high_water.get("main", 0) < sent:
            await writer.wait_any()
        assert writer.queue_depth == 0

    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        await commit_a_batch_after(0)  # the first batch: no rate yet
        assert not writer.behind()
        steady = batch / (BURST_FRAMES_PER_S / 2)  # 600 frames at half the burst rate
        await commit_a_batch_after(steady)
        assert not writer.behind()
        await commit_a_batch_after(batch / (BURST_FRAMES_PER_S * 2))  # twice the burst rate
        assert writer.behind()  # though nothing is queued
        mock_clock.jump(BURST_QUIET * 1.5)  # no commit since: the burst is over
        assert not writer.behind()

        # ... unless a batch is being appended meanwhile (a slow commit in a burst).
        for _ in range(2):  # (the first one's rate counts the quiet time too)
            await commit_a_batch_after(batch / (BURST_FRAMES_PER_S * 2))
        assert writer.behind()
        append, entered, release = writer.log.append, threading.Event(), threading.Event()

        def slow_append(*args: Any) -> Any:
            entered.set()
            release.wait(10)
            return append(*args)

        writer.log.append = slow_append  # type: ignore[method-assign]
        for n in range(sent + 1, sent + batch + 1):
            writer.send_channel.send_nowait(ev("main", n))
        assert await trio.to_thread.run_sync(entered.wait, 10)
        mock_clock.jump(BURST_QUIET * 1.5)
        assert writer.behind()
        release.set()
        while writer.high_water["main"] < sent + batch:
            await writer.wait_any()
        assert not writer.behind()  # 600 frames in 0.15 s: 4,000 a second, no burst
        await writer.send_channel.aclose()
    assert writer.done.is_set() and not writer.behind()


async def test_projectors_stand_back_in_a_burst_and_still_equal_a_rebuild(
    engine: sa.Engine,
) -> None:
    """A burst faster than the writer commits (batches of 3 frames here) leaves more than a
    batch queued: the live projectors put rounds off until the writer catches up, then fold
    the backlog. The rows are what a rebuild gives."""
    from recorder.config import WriterConfig

    sim = Simulator(seed=55, rate=200, api_keys={KEY: SECRET}, connection_limit=None)
    async with trio.open_nursery() as nursery:
        recorder = await start_recording(
            nursery,
            sim,
            engine,
            writer=WriterConfig(batch_max_frames=3, batch_max_ms=5, unavailable_timeout_s=5),
        )
        await progressed(recorder, 100)
        for _ in range(3):
            await sim.inject("burst", 400)
            await progressed(recorder, 100)
        sim.pause()
        await drain(sim, recorder, engine)
        assert recorder.pool is not None and recorder.pool.stood_back > 0
        recorder.stop()
        await recorder.finished.wait()
        nursery.cancel_scope.cancel()

    live = everything(engine)
    assert live["orders"] and live["wallets"]
    rebuild(engine, ["main"])
    assert everything(engine) == live


async def test_the_projectors_catch_up_at_shutdown_for_a_bounded_time(
    engine: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After the drain the projectors fold what is left for ``SHUTDOWN_CATCH_UP`` seconds at
    most, a batch per worker-thread call: a projector that is never caught up (here one
    whose every batch finds more) cannot hold the exit past the bound."""
    import time

    from recorder import daemon
    from recorder.projections.projector import AccountProjector

    steps = 0

    def endless(self: AccountProjector, up_to: int | None = None) -> int:
        nonlocal steps
        steps += 1
        time.sleep(0.02)
        return 1

    monkeypatch.setattr(daemon, "SHUTDOWN_CATCH_UP", 0.5)
    sim = Simulator(seed=57, rate=100, api_keys={KEY: SECRET}, connection_limit=None)
    async with trio.open_nursery() as nursery:
        recorder = await start_recording(nursery, sim, engine)
        await progressed(recorder, 20)
        monkeypatch.setattr(AccountProjector, "step", endless)
        recorder.stop()
        with trio.fail_after(20):
            await recorder.finished.wait()
        nursery.cancel_scope.cancel()
    assert steps > 1
