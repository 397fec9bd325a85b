"""Nothing the exchange sends can stop the record: rows no table can hold, frames of megabytes,
text that is not UTF-8. The daemon stays up, every frame is stored or marked, later frames
are projected, and a restart (or a rebuild) with those frames in the log goes on too."""

from __future__ import annotations

import orjson
import sqlalchemy as sa
import trio

from recorder.audit.status import account_status
from recorder.audit.verify import verify
from recorder.config import StatusConfig
from recorder.projections.rebuild import rebuild
from recorder.simulator.server import HUGE_ID, Simulator
from recorder.store.eventlog import EventLog
from recorder.store.schema import fold_findings, orders
from tests.helpers import (
    KEY,
    SECRET,
    everything,
    make_recorder,
    progressed,
    quiesce,
    session_rows,
    settle,
    socket_frames,
)


def findings(engine: sa.Engine) -> list[tuple[str, str]]:
    with engine.connect() as conn:
        return [
            (r.projection, r.reason)
            for r in conn.execute(sa.select(fold_findings).order_by(fold_findings.c.key))
        ]


def open_orders(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(
                sa.select(sa.func.count()).select_from(orders).where(orders.c.is_open)
            ).scalar_one()
        )


async def test_dirty_rows_huge_frames_and_bad_utf8_never_stop_the_record(
    engine: sa.Engine,
) -> None:
    sim = Simulator(seed=95, rate=100, api_keys={KEY: SECRET}, connection_limit=None)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(sim.serve)
        recorder = make_recorder(engine, port)
        auth = sim.auth_events
        await nursery.start(recorder.run)
        with trio.fail_after(10):
            await auth.wait()
        await progressed(recorder, 30)
        await sim.inject("dirty")
        await sim.inject("huge", 2_000_000)
        await progressed(recorder, 30)  # the session goes on after both
        assert recorder.status["main"].sessions == 1
        auth = sim.auth_events
        await sim.inject("bad-utf8")  # the library closes the socket (1007)
        with trio.fail_after(10):
            await auth.wait()  # ...and the account reconnects
        await progressed(recorder, 30)
        await quiesce(sim, recorder, engine)
        await settle(recorder)
        assert not recorder.finished.is_set()
        assert recorder.pool is not None and recorder.pool.failing is None
        recorder.stop()
        with trio.fail_after(10):
            await recorder.finished.wait()

        sessions = session_rows(engine)
        assert [s.end_reason for s in sessions] == ["closed", "shutdown"]
        for n, s in enumerate(sessions, start=1):
            recorded = socket_frames(engine, s.id)
            sent = sim.frames_for(n)
            assert recorded == sent[: len(recorded)] and len(recorded) >= len(sent) - 50, n
        first = socket_frames(engine, sessions[0].id)
        assert any(HUGE_ID in f for f in first)  # stored verbatim, 30 digits and all
        assert max(len(f) for f in first) > 2_000_000  # the 2 MB frame, whole
        kinds = EventLog(engine).count_by_kind("main")
        assert kinds.get("recorder.undelivered-frame") == 1
        marker = next(
            orjson.loads(e.frame)
            for e in EventLog(engine).iterate("main")
            if e.kind == "recorder.undelivered-frame"
        )
        assert marker["code"] == 1007 and "UTF-8" in marker["problem"]
        found = findings(engine)
        reasons = {(p, r.split(" ", 1)[0]) for p, r in found}
        assert ("orders", "id") in reasons  # the null id and the 30-digit id
        assert ("wallets", "currency") in reasons
        assert any("64 bits" in r for _, r in found)
        assert open_orders(engine) > 0  # the other orders are folded as usual
        state = account_status(engine, StatusConfig(max_frame_age_s=1e9), ["main"])[0]
        assert state.findings["orders"] >= 2 and state.findings["wallets"] >= 1  # status says

        # A restart with those frames in the log stays up and records on.
        sim.resume()
        sim.heartbeat_period = 0.25
        again = make_recorder(engine, port)
        auth = sim.auth_events
        await nursery.start(again.run)
        with trio.fail_after(10):
            await auth.wait()
        await progressed(again, 30)
        assert not again.finished.is_set()
        again.stop()
        with trio.fail_after(10):
            await again.finished.wait()
        nursery.cancel_scope.cancel()

    # rebuild folds the same log to the same rows and findings (from scratch).
    live = everything(engine, "main")
    assert live["fold_findings"]
    rebuild(engine, ["main"])
    assert everything(engine, "main") == live
    assert verify(engine, "main").ok
