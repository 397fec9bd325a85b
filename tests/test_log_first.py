"""The log first: REST never delays recording or stopping (issue: "the socket's frames are the
product; nothing else may hold them up or hold up a stop").

Each test runs a REST server of its own on loopback that misbehaves the way real hosts do
(tests/rest_faults.py), beside the simulator's WebSocket."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import sqlalchemy as sa
import trio

from recorder.audit.verify import verify
from recorder.config import DatabaseConfig, WriterConfig
from recorder.projections.projector import AccountProjector
from recorder.protocol.rest import ENDPOINTS
from recorder.simulator.server import Simulator
from recorder.store import migrate, revision
from recorder.store.database import Database
from recorder.store.engine import create_engine
from recorder.store.errors import StoreUnavailable
from recorder.store.eventlog import EventLog, NewEvent
from recorder.store.lease import FileLease
from recorder.store.schema import backfills
from recorder.writer import Writer
from tests.helpers import (
    KEY,
    SECRET,
    SimThread,
    make_recorder,
    poll,
    progressed,
    quiesce,
    rest_client,
    session_rows,
    socket_frames,
    wait_until,
)
from tests.rest_faults import RestFault

MODES = ["closed", "hang", "trickle", "html502", "malformed", "shapes", "ratelimit"]
STOP_BOUND = 5.0 + 5.0  # the documented bound (5 s) plus the drain of a small test's backlog


def backfill_rows(engine: sa.Engine) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(sa.select(backfills).order_by(backfills.c.id)))


@pytest.mark.parametrize("mode", MODES)
async def test_rest_misbehaving_never_holds_up_the_record_or_a_stop(
    engine: sa.Engine, mode: str
) -> None:
    """Backfill on, its REST host misbehaving for the whole test: the first account frame
    is committed at once, a reconnect's window ends incomplete (or is marked so at the
    stop), stop() returns within its bound, and every session's frames equal what the
    simulator sent."""
    sim = Simulator(seed=90, rate=100, api_keys={KEY: SECRET}, connection_limit=None)
    fault = RestFault(mode, trickle_every=0.5)
    async with trio.open_nursery() as nursery:
        await nursery.start(fault.serve)
        ws_port = await nursery.start(sim.serve)
        recorder = make_recorder(engine, ws_port, rest_port=fault.port)
        began = trio.current_time()
        await nursery.start(recorder.run)
        await wait_until(
            lambda: "main" in recorder.writer.stats.last_frame_at, "first frame", timeout=5
        )
        first_frame = trio.current_time() - began
        print(f"{mode}: first account frame committed {first_frame:.3f} s after start")
        await progressed(recorder, 50)
        if mode != "closed":  # REST is asked (the permission check) while frames flow
            await wait_until(lambda: fault.connections >= 1, "a REST request")
        next_auth = sim.auth_events
        await sim.inject("drop")  # a gap: a reconnect window that REST cannot serve
        with trio.fail_after(10):
            await next_auth.wait()
        backfiller = recorder.backfillers["main"]
        await wait_until(lambda: backfiller.open_windows > 0, "a window requested")
        await progressed(recorder, 50)
        await quiesce(sim, recorder, engine)
        asked = trio.current_time()
        recorder.stop()
        with trio.fail_after(STOP_BOUND):
            await recorder.finished.wait()
        print(f"{mode}: stopped {trio.current_time() - asked:.3f} s after stop()")
        nursery.cancel_scope.cancel()

    sessions = session_rows(engine)
    assert len(sessions) == sim.connection_count == 2
    assert sessions[-1].end_reason == "shutdown"
    for n, s in enumerate(sessions, start=1):
        recorded = socket_frames(engine, s.id)
        sent = sim.frames_for(n)
        if s.end_reason == "closed":
            assert recorded == sent, n
        else:
            assert recorded == sent[: len(recorded)] and len(recorded) >= len(sent) - 50, n
    windows = backfill_rows(engine)
    assert windows, "the reconnect's window was never started"
    assert all(w.complete is False for w in windows), [(w.reason, w.complete) for w in windows]
    assert verify(engine, "main").ok  # the chain holds; the incomplete windows are findings


async def test_rest_never_holds_the_key_lock_while_waiting_for_its_answer() -> None:
    """A REST host that accepts and never answers held the key's lock (which the WebSocket
    auth also takes) for the whole exchange: reconnects waited for it. The lock now covers
    taking the nonce and sending; the answer is awaited outside it."""
    fault = RestFault("hang")
    lock = trio.Lock()
    logged: list[Any] = []

    async def emit(item: Any) -> None:
        logged.append(item)

    async with trio.open_nursery() as nursery, httpx.AsyncClient() as http:
        await nursery.start(fault.serve)
        client = rest_client(fault.url, http, emit, key_lock=lock, timeout=600)
        nursery.start_soon(client.call, ENDPOINTS["permissions"], {})
        await wait_until(lambda: fault.connections >= 1, "the request under way")
        with trio.fail_after(6):  # at most the send deadline (5 s), here: at once
            async with lock:  # what a WebSocket auth of the same key does
                pass
        assert client.requests == 1 and len(logged) == 1  # still waiting for its answer
        nursery.cancel_scope.cancel()


async def test_a_total_deadline_ends_a_trickling_answer() -> None:
    fault = RestFault("trickle", trickle_every=0.8)  # the 2-byte body takes 1.6 s
    logged: list[Any] = []

    async def emit(item: Any) -> None:
        logged.append(item)

    async with trio.open_nursery() as nursery, httpx.AsyncClient() as http:
        await nursery.start(fault.serve)
        client = rest_client(fault.url, http, emit, timeout=1.0)
        answer = await client._once(ENDPOINTS["permissions"], {})
        nursery.cancel_scope.cancel()
    assert answer.status == "unavailable" and "within 1 s" in answer.text
    error = orjson.loads(logged[-1].frame)
    assert logged[-1].kind == "rest.error" and error["status"] is None


async def test_unfinished_windows_are_resumed_at_the_next_start(engine: sa.Engine) -> None:
    """A window in flight when the daemon stops is marked incomplete; the next start asks
    for the same window again, and once it completes nothing is left unbackfilled."""
    sim = Simulator(seed=91, rate=100, api_keys={KEY: SECRET}, connection_limit=None)
    fault = RestFault("hang")
    async with trio.open_nursery() as nursery:
        await nursery.start(fault.serve)
        ws_port = await nursery.start(sim.serve)
        rest_port = await nursery.start(sim.serve_rest)
        first = make_recorder(engine, ws_port, rest_port=fault.port)
        auth = sim.auth_events
        await nursery.start(first.run)
        with trio.fail_after(10):
            await auth.wait()
        await progressed(first, 30)
        auth = sim.auth_events
        await sim.inject("drop")
        with trio.fail_after(10):
            await auth.wait()
        await wait_until(lambda: first.backfillers["main"].running, "the window in flight")
        first.stop()
        with trio.fail_after(STOP_BOUND):
            await first.finished.wait()
        left = [(w.window_from, w.window_to) for w in backfill_rows(engine)]
        assert [w.complete for w in backfill_rows(engine)] == [False]

        second = make_recorder(engine, ws_port, rest_port=rest_port)
        await nursery.start(second.run)
        await wait_until(
            lambda: (
                "main" in second.backfillers and second.backfillers["main"].completed_count >= 2
            ),
            "resumed and restart windows",
        )
        second.stop()
        with trio.fail_after(STOP_BOUND):
            await second.finished.wait()
        nursery.cancel_scope.cancel()
    rows = backfill_rows(engine)
    resumed = [w for w in rows if (w.window_from, w.window_to) == left[0] and w.complete]
    assert resumed and resumed[0].reason == "reconnect"
    assert not [f for f in verify(engine, "main").findings if f.what == "backfill-incomplete"]


async def test_a_chain_conflict_stops_only_the_account_it_concerns(tmp_path: Path) -> None:
    """After an ambiguous commit, account a's log no longer ends where this writer left it
    (another process appended): a is refused; b, in the same batch, is appended once."""
    engine = create_engine(DatabaseConfig(url=f"sqlite:///{tmp_path / 'r.db'}"))
    migrate.upgrade(engine)
    writer = Writer(Database(engine), WriterConfig(batch_max_ms=5))
    foreign = EventLog(engine)
    heard: list[tuple[str, ...]] = []
    writer.on_conflict = lambda accounts, _why: heard.append(accounts)
    faults: list[int] = []

    def lost_reply_and_a_foreign_append() -> None:
        if not faults:
            faults.append(1)
            foreign.after_commit = None
            foreign.append([event("a", 999)], foreign.heads(["a"]))
            raise StoreUnavailable("database unavailable: connection lost after COMMIT (test)")

    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        for n in range(1, 6):
            await writer.send_channel.send(event("a", n))
            await writer.send_channel.send(event("b", n))
        await wait_until(lambda: writer.high_water.get("b", 0) >= 10, "the first batches")
        writer.log.after_commit = lost_reply_and_a_foreign_append
        await writer.send_channel.send(event("a", 6))
        await writer.send_channel.send(event("b", 6))
        await wait_until(lambda: bool(heard), "the conflict")
        writer.log.after_commit = None
        await writer.send_channel.send(event("a", 7))  # refused: another process has a
        await writer.send_channel.send(event("b", 7))
        writer.send_channel.close()
        await writer.done.wait()
    assert heard == [("a",)]
    frames = {acc: [e.frame for e in EventLog(engine).iterate(acc)] for acc in ("a", "b")}
    assert frames["b"] == [f"[0,{n}]" for n in range(1, 8)]  # once each, in order
    assert frames["a"] == [*(f"[0,{n}]" for n in range(1, 7)), "[0,999]"]
    assert verify(engine, "b").ok
    engine.dispose()


def event(account: str, n: int) -> NewEvent:
    return NewEvent(
        account, None, datetime(2026, 12, 1, tzinfo=UTC), 0, "on", None, None, f"[0,{n}]"
    )


def test_lease_names_cannot_collide(tmp_path: Path) -> None:
    """'a b' and 'a_b' read alike in a file name; they used to share one lease, and the
    refusal blamed the daemon's own pid."""
    db = tmp_path / "r.db"
    one, other = FileLease(db, "a b"), FileLease(db, "a_b")
    assert one.path != other.path
    assert one.try_acquire() and other.try_acquire()
    one.release()
    other.release()


def test_new_sqlite_database_and_its_wal_are_private(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        engine = create_engine(DatabaseConfig(url=f"sqlite:///{tmp_path / 'r.db'}"))
        migrate.upgrade(engine)
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
            for path in tmp_path.glob("r.db*"):
                assert path.stat().st_mode & 0o777 == 0o600, path
            assert (tmp_path / "r.db-wal").exists()
        engine.dispose()
    finally:
        os.umask(old)


# --- the process: every phase answers the first signal ---------------------------------------

RUN_KEY, RUN_SECRET = "log-first-key", "log-first-secret-7c2e90"


def run_config(tmp_path: Path, ws_port: int, rest_url: str, db_url: str | None = None) -> Path:
    cfg = tmp_path / "recorder.toml"
    cfg.write_text(
        f'[database]\nurl = "{db_url or "sqlite:///" + str(tmp_path / "r.db")}"\n'
        f'[writer]\nbatch_max_ms = 5\n[[accounts]]\nname = "main"\n'
        f'url = "ws://127.0.0.1:{ws_port}/ws/2"\nrest_url = "{rest_url}"\n'
        'api_key_env = "LF_KEY"\napi_secret_env = "LF_SECRET"\nbackoff_cap_s = 0.5\n'
    )
    return cfg


class Daemon:
    """``bfx-recorder ARGS`` as a process, its stderr read line by line as it comes."""

    def __init__(self, cfg: Path, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "recorder", *args, "--config", str(cfg)],
            env={**os.environ, "LF_KEY": RUN_KEY, "LF_SECRET": RUN_SECRET},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        assert self.proc.stderr is not None
        stream = self.proc.stderr
        self.reader = threading.Thread(
            target=lambda: self.lines.extend(iter(stream.readline, "")), daemon=True
        )
        self.reader.start()

    def said(self, text: str) -> bool:
        return any(text in line for line in self.lines)

    def stop(self, bound: float) -> tuple[int, float]:
        """SIGTERM; the exit code and how long the exit took."""
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(bound + 30)
        took = time.monotonic() - t0
        self.reader.join(10)
        return code, took

    def __enter__(self) -> Daemon:
        return self

    def __exit__(self, *_: object) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


class FaultThread:
    """A RestFault on its own trio loop in a thread, for subprocess tests."""

    def __init__(self, mode: str) -> None:
        self.fault = RestFault(mode)
        self.started = threading.Event()
        self.cancel: trio.CancelScope | None = None
        self.token: trio.lowlevel.TrioToken | None = None
        self.thread = threading.Thread(target=trio.run, args=(self._main,), daemon=True)

    async def _main(self) -> None:
        self.token = trio.lowlevel.current_trio_token()
        with trio.CancelScope() as self.cancel:
            async with trio.open_nursery() as nursery:
                await nursery.start(self.fault.serve)
                self.started.set()

    def __enter__(self) -> RestFault:
        self.thread.start()
        assert self.started.wait(10)
        return self.fault

    def __exit__(self, *_: object) -> None:
        assert self.cancel is not None and self.token is not None
        trio.from_thread.run_sync(self.cancel.cancel, trio_token=self.token)
        self.thread.join(10)


@pytest.mark.slow
@pytest.mark.parametrize(
    "when", ["opening the database", "recorder start", "permission check", "backfill"]
)
def test_sigterm_in_every_phase_exits_0_within_the_bound(tmp_path: Path, when: str) -> None:
    """REST accepts and never answers. A SIGTERM while the database is opened (before trio
    runs), as the recorder starts (the few milliseconds before trio's receiver were a gap),
    during the permission check, and during a backfill window: exit 0 within the bound,
    sessions ended with 'shutdown', a window in flight marked incomplete."""
    with (
        SimThread(seed=92, rate=50, api_keys={RUN_KEY: RUN_SECRET}, connection_limit=None) as st,
        FaultThread("hang") as fault,
    ):
        cfg = run_config(tmp_path, st.port, fault.url)
        with Daemon(cfg, "run") as daemon:
            if when in ("opening the database", "recorder start"):
                poll(lambda: daemon.said(when), when)
            elif when == "permission check":
                poll(lambda: fault.connections >= 1 and st.sim.auth_requests, "the check")
            elif when == "backfill":
                poll(lambda: len(st.sim.auth_requests) >= 1, "the first auth")
                poll(lambda: len(st.sim.frames_for(1)) > 20, "traffic")
                st.spawn(st.sim.inject, "drop")
                poll(lambda: daemon.said("backfill start"), "a window in flight")
            code, took = daemon.stop(STOP_BOUND)
            err = "".join(daemon.lines)
    print(f"{when}: exit {code} {took:.2f} s after SIGTERM")
    assert code == 0, err
    assert took < STOP_BOUND, err
    assert "Traceback" not in err and RUN_SECRET not in err
    engine = create_engine(DatabaseConfig(url=f"sqlite:///{tmp_path / 'r.db'}"))
    try:
        if revision.current(engine) == revision.HEAD:  # else stopped before the schema
            ends = [s.end_reason for s in session_rows(engine)]
            assert all(end is not None for end in ends), ends
            if ends:
                assert ends[-1] == "shutdown"
            kinds = EventLog(engine).count_by_kind("main")
            if when == "backfill":
                AccountProjector(engine, "main").catch_up()
                assert [w.complete for w in backfill_rows(engine)] == [False]
                assert kinds.get("recorder.backfill-end") == 1
    finally:
        engine.dispose()


@pytest.mark.slow
def test_sigterm_while_standing_by_exits_0(tmp_path: Path) -> None:
    with (
        SimThread(seed=93, rate=20, api_keys={RUN_KEY: RUN_SECRET}, connection_limit=None) as st,
        FaultThread("closed") as fault,
    ):
        cfg = run_config(tmp_path, st.port, fault.url)
        with Daemon(cfg, "run") as first:
            poll(lambda: st.sim.auth_requests, "the first recorder's auth")
            with Daemon(cfg, "run", "--standby") as standby:
                poll(lambda: standby.said("standing by"), "the standby waiting")
                code, took = standby.stop(STOP_BOUND)
            assert code == 0 and took < STOP_BOUND, "".join(standby.lines)
            assert len(st.sim.auth_requests) == 1  # the standby never connected
            assert first.proc.poll() is None  # the first one records on
            code, _ = first.stop(STOP_BOUND)
            assert code == 0


@pytest.mark.slow
def test_waiting_for_a_silent_database_says_so_and_answers_a_signal(tmp_path: Path) -> None:
    """A PostgreSQL port that accepts and never answers: the wait is said at once, naming
    the database, and SIGTERM ends it."""
    import socket

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        url = f"postgresql+psycopg://postgres@127.0.0.1:{port}/test"
        cfg = run_config(tmp_path, 9, "http://127.0.0.1:9/v2", db_url=url)
        with Daemon(cfg, "run") as daemon:
            poll(lambda: daemon.said("opening the database"), "the first line", timeout=20)
            assert daemon.said(f"127.0.0.1:{port}/test")
            code, took = daemon.stop(STOP_BOUND)
    assert code == 0, "".join(daemon.lines)
    assert took < STOP_BOUND


@pytest.mark.slow
def test_backfill_command_stopped_marks_its_window_incomplete(tmp_path: Path) -> None:
    with FaultThread("hang") as fault:
        cfg = run_config(tmp_path, 9, fault.url)
        with Daemon(cfg, "backfill", "--from", "2026-11-01T00:00:00Z") as command:
            poll(lambda: fault.connections >= 1, "the first request")
            code, took = command.stop(STOP_BOUND)
            err = "".join(command.lines)
    assert code == 1, err
    assert took < STOP_BOUND
    assert "Traceback" not in err
    assert (
        "stopped by SIGTERM: recorded as incomplete; run it again" in err.strip().splitlines()[-1]
    )
    engine = create_engine(DatabaseConfig(url=f"sqlite:///{tmp_path / 'r.db'}"))
    try:
        assert [(w.reason, w.complete) for w in backfill_rows(engine)] == [("manual", False)]
    finally:
        engine.dispose()


def test_rebuild_stopped_by_a_signal_says_where_and_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGTERM in the middle of `rebuild`: one line saying how far it got; the committed
    batches (rows and checkpoints together) stay, and folding on from there gives what a
    whole rebuild gives."""
    from click.testing import CliRunner

    from recorder.cli import main
    from recorder.commands import rebuild as rebuild_command
    from recorder.projections import rebuild as rebuilding
    from tests.helpers import everything, store_log, synthetic_log

    url = f"sqlite:///{tmp_path / 'r.db'}"
    engine = create_engine(DatabaseConfig(url=url))
    migrate.upgrade(engine)
    store_log(engine, "main", synthetic_log(seed=7, steps=900, gap_every=200, snap_every=300))
    real = rebuilding.rebuild

    def interrupted(*args: Any, **kwargs: Any) -> int:
        progress = args[3]

        def then_signal(n: int) -> None:
            progress(n)
            os.kill(os.getpid(), signal.SIGTERM)  # after the first committed batch

        return real(*args[:3], then_signal, batch=300)

    monkeypatch.setattr(rebuild_command, "rebuild", interrupted)
    result = CliRunner().invoke(main, ["rebuild"], env={"BFX_RECORDER_DATABASE_URL": url})
    assert result.exit_code == 1, result.output
    line = result.output.strip().splitlines()[-1]
    assert "rebuild stopped by SIGTERM after 300 of" in line
    assert "main at event 300" in line and "`bfx-recorder run` folds on from there" in line
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # restored
    AccountProjector(engine, "main").catch_up()  # what the daemon does at its next start
    resumed = everything(engine, "main")
    real(engine, ["main"])
    assert everything(engine, "main") == resumed
    engine.dispose()


def test_rebuild_stopped_while_an_import_runs_says_where(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The signal arrives while Python runs a class body's ``__set_name__`` (as an import
    does, e.g. SQLAlchemy's PostgreSQL dialect on the first connect): Python 3.11 turns the
    handler's exception into a ``RuntimeError`` there (3.12 lets it through as it is, and
    this passes without that path). The rebuild still ends with the one line saying how far
    it got, not a traceback."""
    from click.testing import CliRunner

    from recorder.cli import main
    from recorder.commands import rebuild as rebuild_command
    from recorder.projections import rebuild as rebuilding
    from tests.helpers import store_log, synthetic_log

    url = f"sqlite:///{tmp_path / 'r.db'}"
    engine = create_engine(DatabaseConfig(url=url))
    migrate.upgrade(engine)
    store_log(engine, "main", synthetic_log(seed=7, steps=600, gap_every=200, snap_every=300))
    engine.dispose()
    real = rebuilding.rebuild

    class SignalsWhileNamed:
        def __set_name__(self, owner: type, name: str) -> None:
            os.kill(os.getpid(), signal.SIGTERM)  # the handler runs before this returns

    def interrupted(*args: Any, **kwargs: Any) -> int:
        progress = args[3]

        def then_signal(n: int) -> None:
            progress(n)

            class Imported:  # what an import executes
                attribute = SignalsWhileNamed()

        return real(*args[:3], then_signal, batch=300)

    monkeypatch.setattr(rebuild_command, "rebuild", interrupted)
    result = CliRunner().invoke(main, ["rebuild"], env={"BFX_RECORDER_DATABASE_URL": url})
    assert isinstance(result.exception, SystemExit), result.exception  # not the RuntimeError
    assert result.exit_code == 1, result.output
    line = result.output.strip().splitlines()[-1]
    assert "rebuild stopped by SIGTERM after 300 of" in line, result.output
    assert "main at event 300" in line
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # restored


def test_rebuild_failing_after_a_swallowed_signal_is_not_called_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A signal whose exception a library swallowed (SQLAlchemy's pool logs what it meets
    while resetting a connection), then an unrelated failure: that failure is what the
    rebuild reports, not "stopped by SIGTERM"."""
    from click.testing import CliRunner

    from recorder.cli import main
    from recorder.commands import rebuild as rebuild_command
    from recorder.commands.rebuild import Interrupted
    from tests.helpers import store_log, synthetic_log

    url = f"sqlite:///{tmp_path / 'r.db'}"
    engine = create_engine(DatabaseConfig(url=url))
    migrate.upgrade(engine)
    store_log(engine, "main", synthetic_log(seed=7, steps=50, gap_every=20, snap_every=25))
    engine.dispose()

    def failing(*args: Any, **kwargs: Any) -> int:
        with contextlib.suppress(Interrupted):  # swallowed, as a library's cleanup may
            os.kill(os.getpid(), signal.SIGTERM)
        raise LookupError("an unrelated failure")

    monkeypatch.setattr(rebuild_command, "rebuild", failing)
    result = CliRunner().invoke(main, ["rebuild"], env={"BFX_RECORDER_DATABASE_URL": url})
    assert isinstance(result.exception, LookupError), result.exception
    assert "stopped by" not in result.output
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # restored


async def test_an_answer_over_the_bound_is_not_read_further() -> None:
    """Memory stays bounded whatever a server sends: past ``max_answer_bytes`` the answer is
    dropped with a rest.error saying so (and the window retries)."""
    sim = Simulator(seed=96, rate=0, api_keys={KEY: SECRET}, connection_limit=None)
    await sim.advance(100)
    logged: list[Any] = []

    async def emit(item: Any) -> None:
        logged.append(item)

    async with trio.open_nursery() as nursery, httpx.AsyncClient() as http:
        port = await nursery.start(sim.serve_rest)
        client = rest_client(f"http://127.0.0.1:{port}/v2", http, emit, max_answer_bytes=2000)
        endpoint = ENDPOINTS["trades-hist"]
        big = await client._once(endpoint, {"start": 0, "end": 2**41, "limit": 2500})
        client.max_answer_bytes = 10_000_000
        whole = await client._once(endpoint, {"start": 0, "end": 2**41, "limit": 2500})
        nursery.cancel_scope.cancel()
    assert big.status == "unavailable" and "answer over 2000 bytes" in big.text
    assert whole.status == "ok" and len(logged[-1].frame) > 2000  # the same answer, bounded
