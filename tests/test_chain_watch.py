"""The chain verifies itself while the daemon runs (issue: operations, item 2): new rows each
interval, the triggers and the verified row checked each interval, the whole chain daily; the
outcome as metrics and log lines."""

from __future__ import annotations

import httpx
import sqlalchemy as sa
import trio

from recorder.audit.watch import ChainWatch
from recorder.config import AuditConfig, MetricsConfig
from recorder.simulator.server import Simulator
from recorder.store.database import Database
from recorder.store.schema import events
from tests.helpers import (
    KEY,
    SECRET,
    progressed,
    samples,
    start_recording,
    store_log,
    synthetic_log,
    wait_until,
)


def _drop_trigger(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.exec_driver_sql("DROP TRIGGER events_no_update_delete ON events")
        else:
            conn.exec_driver_sql("DROP TRIGGER events_no_update")


def _restore_trigger(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.exec_driver_sql(
                "CREATE TRIGGER events_no_update_delete BEFORE UPDATE OR DELETE ON events "
                "FOR EACH ROW EXECUTE FUNCTION events_append_only()"
            )
        else:
            conn.exec_driver_sql(
                "CREATE TRIGGER events_no_update BEFORE UPDATE ON events "
                "BEGIN SELECT RAISE(ABORT, 'events is append-only'); END"
            )


async def test_checks_new_rows_finds_a_dropped_trigger_and_an_edited_row(
    engine: sa.Engine,
) -> None:
    store_log(engine, "a", synthetic_log(4, 40, 13, 0))
    now = [1_000.0]
    watch = ChainWatch(Database(engine), ["a"], every_s=60, wall=lambda: now[0])
    await watch.round()  # the first round is the full check
    check = watch.checks["a"]
    with engine.connect() as conn:
        last = conn.execute(sa.select(sa.func.max(events.c.id))).scalar_one()
    assert (check.verified_id, check.problem, check.failures) == (last, None, 0)
    # New rows: the next round goes on from there.
    store_log(engine, "a", synthetic_log(5, 10, 13, 0))
    now[0] += 60
    await watch.round()
    with engine.connect() as conn:
        last = conn.execute(sa.select(sa.func.max(events.c.id))).scalar_one()
        victim = conn.execute(
            sa.select(events.c.id).order_by(events.c.id).offset(7).limit(1)
        ).scalar_one()
    assert (check.verified_id, check.problem) == (last, None)
    # A row edited behind the triggers' back: the missing trigger is found at the next round.
    _drop_trigger(engine)
    with engine.begin() as conn:
        conn.execute(events.update().where(events.c.id == victim).values(frame='[0,"hb"]'))
    now[0] += 60
    await watch.round()
    assert check.problem is not None and "triggers" in check.problem
    assert check.failures == 1
    # The trigger put back: the edited row (before the verified position) is found by the
    # full check, not by the cheap one.
    _restore_trigger(engine)
    now[0] += 60
    await watch.round()
    assert check.problem is None
    now[0] += 86_400
    await watch.round()
    assert check.problem == f"row {victim} does not follow the chain"
    assert check.broken_at == victim and check.failures == 2


async def test_the_daemon_checks_its_chain_and_says_so_in_metrics(engine: sa.Engine) -> None:
    sim = Simulator(seed=91, rate=300, api_keys={KEY: SECRET}, connection_limit=None)
    async with trio.open_nursery() as nursery, httpx.AsyncClient() as http:
        recorder = await start_recording(
            nursery,
            sim,
            engine,
            metrics=MetricsConfig(listen="127.0.0.1:0"),
            audit=AuditConfig(verify_every_s=0.2),
        )
        await progressed(recorder, 200)
        watch = recorder.chain_watch
        assert watch is not None
        await wait_until(lambda: watch.checks["main"].verified_id >= 200, "a verified position")
        await wait_until(lambda: recorder.metrics_port is not None, "metrics listening")
        got = samples((await http.get(f"http://127.0.0.1:{recorder.metrics_port}/metrics")).text)
        assert got['bfx_chain_verified_id{account="main"}'] >= 200
        assert got['bfx_chain_intact{account="main"}'] == 1
        assert got['bfx_chain_verify_failures_total{account="main"}'] == 0
        assert got['bfx_chain_last_check_timestamp_seconds{account="main"}'] > 1e9
        recorder.stop()
        await recorder.finished.wait()
        nursery.cancel_scope.cancel()
