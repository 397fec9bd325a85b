"""The recording daemon against the simulator, on SQLite and PostgreSQL."""

from __future__ import annotations

import io
import logging

import orjson
import sqlalchemy as sa
import trio

from recorder import logs
from recorder.config import (
    WriterConfig,
)
from recorder.protocol import classify, sign
from recorder.simulator.server import Simulator
from recorder.store.eventlog import EventLog
from recorder.store.hashchain import GENESIS, chain_hash
from tests.helpers import (
    KEY,
    SECRET,
    dump_database,
    event_rows,
    make_recorder,
    progressed,
    quiesce,
    reauth,
    session_rows,
    start_recording,
    wait_until,
)


async def test_every_frame_recorded_verbatim_through_every_fault(engine: sa.Engine) -> None:
    """Invariants 1 and 2: per session, events == what the simulator put on the wire."""
    sim = Simulator(
        seed=21, rate=300, api_keys={KEY: SECRET}, connection_limit=None, close_after_20051=0.1
    )
    async with trio.open_nursery() as nursery:
        recorder = await start_recording(nursery, sim, engine)
        await progressed(recorder)
        for fault, arg in [
            ("malformed", None),
            ("truncated", None),
            ("seq-skip", None),
            ("drop", None),
            ("drop-silent", None),
            ("info-20051", None),
            ("maintenance", 0.2),
            ("seq-repeat", None),
            ("burst", 500),
            ("stall", 5.0),
        ]:
            next_auth = sim.auth_events
            await sim.inject(fault, arg)
            if fault not in ("malformed", "truncated", "seq-repeat", "burst"):
                with trio.fail_after(10):
                    await next_auth.wait()
            await progressed(recorder)
        await quiesce(sim, recorder, engine)
        recorder.stop()
        with trio.fail_after(10):
            await recorder.finished.wait()
        nursery.cancel_scope.cancel()

    rows = event_rows(engine)
    sess = session_rows(engine)
    assert len(sess) == sim.connection_count
    reasons = [s.end_reason for s in sess]
    assert reasons[-1] == "shutdown"
    for wanted in ("seq-gap", "closed", "info-20051", "info-20061", "heartbeat-timeout"):
        assert wanted in reasons, (wanted, reasons)
    for n, s in enumerate(sess, start=1):
        recorded = [
            r.frame for r in rows if r.session_id == s.id and not r.kind.startswith("recorder.")
        ]
        sent = sim.frames_for(n)
        if s.end_reason == "closed":
            assert recorded == sent, f"session {n} ({s.end_reason}) differs"
        else:
            # The recorder ended it: what was still in flight when it stopped reading is not
            # read, hence not recorded; everything read is, verbatim and in order.
            assert recorded == sent[: len(recorded)], f"session {n} ({s.end_reason}) differs"
            assert len(recorded) >= len(sent) - 50
        kinds = [r.kind for r in rows if r.session_id == s.id]
        assert kinds[0] == "recorder.connected"
        assert kinds[-1] == "recorder.disconnected"  # every end is marked in the log
        marker = orjson.loads([r.frame for r in rows if r.session_id == s.id][-1])
        assert marker["reason"] == s.end_reason
        assert s.connected_at is not None and s.ended_at is not None
        assert s.auth_status == "OK" and s.user_id == sim.model.user_id
    # The log order is the read order: ids strictly increase, sessions do not interleave.
    ids = [r.id for r in rows]
    assert ids == sorted(ids)
    assert [r.session_id for r in rows] == sorted(r.session_id for r in rows)
    # Gaps are visible: the skipped sequence number has a marker with expected/got.
    gaps = [orjson.loads(r.frame) for r in rows if r.kind == "recorder.seq-gap"]
    assert any(g["problem"] == "gap" and g["got"] == g["expected"] + 1 for g in gaps)
    assert any(g["problem"] == "repeat" for g in gaps)
    assert sum(1 for r in rows if r.kind == "malformed") == 2
    # The hash chain links every row to the previous one.
    prev = GENESIS
    for r in rows:
        prev_expected = chain_hash(
            prev,
            r.account,
            r.session_id,
            r.received_at,
            r.chan_id,
            r.kind,
            r.seq,
            r.auth_seq,
            r.frame,
        )
        assert r.hash == prev_expected
        prev = r.hash
    # Sequence numbers were stored as classified.
    for r in rows:
        if r.chan_id == 0:
            f = classify(r.frame)
            assert (r.seq, r.auth_seq) == (f.seq, f.auth_seq)


async def test_bad_credentials_stop_one_account_not_the_other(engine: sa.Engine) -> None:
    sim = Simulator(seed=22, rate=200, api_keys={KEY: SECRET}, connection_limit=None)
    stream = io.StringIO()
    logs.setup("text", "INFO", stream=stream)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(sim.serve)
        recorder = make_recorder(
            engine, port, accounts=[("good", KEY, SECRET), ("bad", "unknown-key", SECRET)]
        )
        await nursery.start(recorder.run)
        await wait_until(lambda: recorder.status["bad"].stopped is not None, "bad stopped")
        log = EventLog(engine)
        data = ("os", "ws", "on", "wu")
        await wait_until(
            lambda: sum(log.count_by_kind("good").get(k, 0) for k in data) > 5, "good records"
        )
        assert recorder.status["good"].connected
        recorder.stop()
        with trio.fail_after(10):
            await recorder.finished.wait()
        nursery.cancel_scope.cancel()
    bad = session_rows(engine, "bad")
    assert len(bad) == 1  # final: no retry
    assert (bad[0].auth_status, bad[0].auth_code, bad[0].end_reason) == (
        "FAILED",
        10100,
        "auth-failed",
    )
    good_events = event_rows(engine, "good")
    assert sum(1 for r in good_events if r.kind in ("os", "ws", "on", "wu")) > 5
    text = stream.getvalue()
    assert "account bad stopped: authentication failed with code 10100" in text
    assert text.count("account bad stopped") == 1
    logging.getLogger().handlers.clear()


async def test_all_accounts_failed_exits_2(engine: sa.Engine) -> None:
    sim = Simulator(seed=23, rate=0, api_keys={KEY: SECRET}, connection_limit=None)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(sim.serve)
        recorder = make_recorder(engine, port, accounts=[("bad", KEY, "wrong-secret")])
        with trio.fail_after(10):
            code = await recorder.run()
        nursery.cancel_scope.cancel()
    assert code == 2  # every key refused: a configuration to fix (the unit does not restart)
    assert recorder.status["bad"].stopped is not None
    assert recorder.status["bad"].stopped.auth_msg == "apikey: digest invalid"


async def test_nonce_never_reused_when_clock_steps_back(engine: sa.Engine) -> None:
    """The simulator rejects a nonce not above the last: a second run with the clock an hour
    earlier still authenticates, because the last nonce was persisted."""
    sim = Simulator(seed=24, rate=0, api_keys={KEY: SECRET}, connection_limit=None)
    now = 1_800_000_000.0
    async with trio.open_nursery() as nursery:
        port = await nursery.start(sim.serve)
        for clock in (lambda: now, lambda: now - 3600):
            auth = sim.auth_events
            recorder = make_recorder(engine, port, nonce_clock=clock)
            await nursery.start(recorder.run)
            with trio.fail_after(10):
                await auth.wait()
            recorder.stop()
            await recorder.finished.wait()
        nursery.cancel_scope.cancel()
    sess = session_rows(engine)
    assert [s.auth_status for s in sess] == ["OK", "OK"]
    nonces = [int(m["authNonce"]) for m in sim.auth_requests]
    assert nonces[1] > nonces[0] >= int(now * 1_000_000)
    dump = dump_database(engine)
    assert KEY not in dump  # the nonce table stores a hash of the key, not the key


async def test_secret_and_signature_never_logged_or_stored(engine: sa.Engine) -> None:
    stream = io.StringIO()
    logs.setup("json", "DEBUG", stream=stream)
    sim = Simulator(seed=25, rate=300, api_keys={KEY: SECRET}, connection_limit=None)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(sim.serve)
        recorder = make_recorder(engine, port, accounts=[("main", KEY, SECRET), ("x", KEY, "bad")])
        first = sim.auth_events
        await nursery.start(recorder.run)
        with trio.fail_after(10):
            await first.wait()
        await wait_until(lambda: recorder.status["x"].stopped is not None, "x stopped")
        await progressed(recorder)
        await reauth(sim, "drop")
        await progressed(recorder)
        recorder.stop()
        await recorder.finished.wait()
        nursery.cancel_scope.cancel()
    logging.getLogger().handlers.clear()
    signatures = [m["authSig"] for m in sim.auth_requests]
    assert any(m["authSig"] == sign(SECRET, m["authPayload"]) for m in sim.auth_requests)
    haystacks = {
        "logs": stream.getvalue(),
        "database": dump_database(engine),
        "status": repr(recorder.status),
    }
    for where, text in haystacks.items():
        assert SECRET not in text, where
        for sig in signatures:
            assert sig not in text, where
    assert '"msg":"session start"' in haystacks["logs"]


async def test_database_unavailable_ends_session_and_loses_nothing(engine: sa.Engine) -> None:
    """The writer cannot commit for a while: the session ends with 'database-unavailable'
    after the bound, every frame read is committed once the database is back, and the
    recorder reconnects."""
    sim = Simulator(seed=26, rate=500, api_keys={KEY: SECRET}, connection_limit=None)
    blocker = engine.connect()
    cfg_writer = WriterConfig(batch_max_ms=5, queue_size=50, unavailable_timeout_s=0.5)
    async with trio.open_nursery() as nursery:
        recorder = await start_recording(nursery, sim, engine, writer=cfg_writer)
        await progressed(recorder)
        # Take the events table away from the writer until the session gives up on it.
        trans = blocker.begin()
        if engine.dialect.name == "postgresql":
            blocker.exec_driver_sql("LOCK TABLE events IN ACCESS EXCLUSIVE MODE")
        else:
            blocker.exec_driver_sql(
                "INSERT INTO sessions (account, started_at) VALUES ('blocker', '2020-01-01')"
            )
        # The session gives up on the writer after its bound and closes the socket (its end is
        # recorded once the database is back).
        await wait_until(lambda: not sim.connections, "the session gave up")
        trans.rollback()
        blocker.close()
        status = recorder.status["main"]
        await wait_until(lambda: status.sessions >= 2 and status.connected, "reconnected")
        await progressed(recorder)
        await quiesce(sim, recorder, engine)
        recorder.stop()
        with trio.fail_after(20):
            await recorder.finished.wait()
        nursery.cancel_scope.cancel()
    sess = session_rows(engine)
    assert sess[0].end_reason == "database-unavailable"
    assert sess[-1].end_reason == "shutdown"
    rows = event_rows(engine)
    for n, s in enumerate(sess, start=1):
        recorded = [
            r.frame for r in rows if r.session_id == s.id and not r.kind.startswith("recorder.")
        ]
        sent = sim.frames_for(n)
        assert recorded and recorded == sent[: len(recorded)]
    assert recorder.writer.stats.committed_events == len(rows)
