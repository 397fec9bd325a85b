"""The log's promise at its edges: exactly once under ambiguous commits, one recorder per
account, transient store errors, guards, chain anchoring, signals."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import trio
from click.testing import CliRunner

from recorder.audit.verify import verify
from recorder.cli import main
from recorder.config import DatabaseConfig, WriterConfig
from recorder.projections.projector import AccountProjector
from recorder.projections.rebuild import rebuild
from recorder.simulator.server import Simulator
from recorder.store import migrate
from recorder.store.database import Database
from recorder.store.engine import create_engine
from recorder.store.errors import StoreUnavailable
from recorder.store.eventlog import EventLog, NewEvent
from recorder.store.lease import LeaseHeld, hold_all, lease_for
from recorder.store.schema import projector_checkpoints as checkpoints
from recorder.writer import Writer
from tests.helpers import KEY as DAEMON_KEY
from tests.helpers import (
    REST_CASES,
    SimThread,
    closed_port,
    everything,
    poll,
    progressed,
    quiesce,
    rest_port_for,
    start_recording,
    store_log,
    synthetic_log,
    wait_until,
)
from tests.helpers import SECRET as DAEMON_SECRET
from tests.proxy import CommitCutter

KEY = "reliability-key"
SECRET = "reliability-secret-5c1d7e"

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def frames(account: str, first: int, last: int) -> list[NewEvent]:
    return [
        NewEvent(account, None, T0 + timedelta(milliseconds=n), 0, "on", None, None, f"[0,{n}]")
        for n in range(first, last + 1)
    ]


async def write(writer: Writer, items: list[NewEvent], account: str) -> None:
    """Hand ``items`` to the writer and wait until they are committed."""
    for item in items:
        await writer.send_channel.send(item)
    target = writer.stats.committed_events + len(items)
    with trio.fail_after(30):
        while writer.stats.committed_events < target:
            await writer.wait_beyond(account, writer.high_water.get(account, 0), 0.05)


def assert_once_in_order(engine: sa.Engine, items: list[NewEvent]) -> None:
    stored = [e.frame for e in EventLog(engine).iterate("main")]
    assert stored == [i.frame for i in items]  # every frame once, in order
    report = verify(engine, "main")
    assert report.ok and report.checked["main"] == len(items)


async def test_ambiguous_commit_sqlite_is_not_stored_twice(tmp_path: object) -> None:
    """The commit succeeds but the writer is told the connection failed (a fault hook at the
    store's Python boundary): it finds the batch landed and does not append it again."""
    engine = create_engine(DatabaseConfig(url=f"sqlite:///{tmp_path}/r.db"))
    migrate.upgrade(engine)
    writer = Writer(Database(engine), WriterConfig(batch_max_ms=5))
    faults: list[int] = []

    def lost_reply() -> None:
        if not faults:
            faults.append(1)
            raise StoreUnavailable("database unavailable: connection lost after COMMIT (test)")

    items = frames("main", 1, 300)
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        await write(writer, items[:100], "main")
        writer.log.after_commit = lost_reply
        await write(writer, items[100:], "main")
        writer.send_channel.close()
        await writer.done.wait()
    assert faults and writer.stats.retries >= 1
    assert_once_in_order(engine, items)
    engine.dispose()


@pytest.mark.postgres
async def test_ambiguous_commit_postgres_is_not_stored_twice(pg_url: str) -> None:
    """A proxy forwards COMMIT, swallows its reply and cuts the connection."""
    direct = create_engine(DatabaseConfig(url=pg_url))
    migrate.upgrade(direct)
    async with trio.open_nursery() as nursery:
        proxy = CommitCutter()
        port = await nursery.start(proxy.serve)
        # Only the writer goes through the proxy (the loop must stay free to run it).
        engine = create_engine(DatabaseConfig(url=pg_url.replace(":5432/", f":{port}/")))
        writer = Writer(Database(engine), WriterConfig(batch_max_ms=5))
        items = frames("main", 1, 300)
        await nursery.start(writer.run)
        await write(writer, items[:100], "main")
        proxy.arm()
        await write(writer, items[100:], "main")
        writer.send_channel.close()
        await writer.done.wait()
        nursery.cancel_scope.cancel()
    assert proxy.cuts == 1 and writer.stats.retries >= 1
    engine.dispose()
    assert_once_in_order(direct, items)
    direct.dispose()


# --- one recorder per account -----------------------------------------------------------------


def test_lease_is_exclusive_and_names_its_holder(engine: sa.Engine) -> None:
    first, second = lease_for(engine, "main"), lease_for(engine, "main")
    other = lease_for(engine, "other")
    assert first.try_acquire()
    assert not second.try_acquire()
    holder = second.holder()
    assert holder is not None and f"pid {os.getpid()} on " in holder and " since " in holder
    assert other.try_acquire()  # per account
    with pytest.raises(LeaseHeld, match=f"account main is recorded by pid {os.getpid()}"):
        hold_all(engine, ["main"])
    assert first.still_held()
    first.release()
    assert second.try_acquire()
    second.release()
    other.release()


def run_config(tmp_path: Path, db_url: str, port: int, rest: str = "rest-off") -> Path:
    """``rest``: the backfill off, or on against a REST host that cannot be reached."""
    backfill = (
        f'rest_url = "http://127.0.0.1:{closed_port()}/v2"\n'
        if rest == "rest-unreachable"
        else "backfill = false\n"
    )
    cfg = tmp_path / "recorder.toml"
    cfg.write_text(
        f'[database]\nurl = "{db_url}"\n[writer]\nbatch_max_ms = 5\n'
        f'[[accounts]]\nname = "main"\nurl = "ws://127.0.0.1:{port}/ws/2"\n'
        'api_key_env = "REL_KEY"\napi_secret_env = "REL_SECRET"\nbackoff_cap_s = 0.5\n' + backfill
    )
    return cfg


def start(cfg: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "recorder", *extra, "--config", str(cfg)],
        env={**os.environ, "REL_KEY": KEY, "REL_SECRET": SECRET},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.slow
@pytest.mark.parametrize("rest", REST_CASES)
def test_second_recorder_is_refused_standby_takes_over_after_kill_9(
    tmp_path: Path, db_url: str, rest: str
) -> None:
    """Two `run` processes, one account: the second is refused (exit 2, naming the holder);
    a `--standby` one takes over when the first is killed with SIGKILL in the middle of a
    burst; nothing is stored twice, the chain verifies, projections equal a rebuild."""
    engine = create_engine(DatabaseConfig(url=db_url))
    migrate.upgrade(engine)
    with SimThread(seed=50, rate=100, api_keys={KEY: SECRET}, connection_limit=None) as st:
        cfg = run_config(tmp_path, db_url, st.port, rest)
        first = start(cfg, "run")
        standby: subprocess.Popen[str] | None = None
        try:
            poll(lambda: len(st.sim.auth_requests) >= 1, "the first recorder's auth")
            refused = subprocess.run(
                [sys.executable, "-m", "recorder", "run", "--config", str(cfg)],
                env={**os.environ, "REL_KEY": KEY, "REL_SECRET": SECRET},
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert refused.returncode == 2, refused.stderr
            line = refused.stderr.strip().splitlines()[-1]
            assert f"account main is recorded by pid {first.pid} on " in line
            assert "--standby" in line and "Traceback" not in refused.stderr
            assert len(st.sim.auth_requests) == 1  # it never connected

            standby = start(cfg, "run", "--standby")
            said: list[str] = []
            reader = threading.Thread(
                target=lambda: said.extend(iter(standby.stderr.readline, "")),  # type: ignore[union-attr]
                daemon=True,
            )
            reader.start()
            poll(lambda: any("standing by" in line for line in said), "the standby waiting")
            st.spawn(st.sim.inject, "burst", 100_000)
            poll(lambda: len(st.sim.sent_log) > 3000, "the burst under way")
            first.kill()  # SIGKILL mid-burst: no drain, no end marker
            killed_at = time.monotonic()
            first.wait(10)
            poll(lambda: len(st.sim.auth_requests) >= 2, "the standby's auth")
            print(
                f"failover: standby authenticated {time.monotonic() - killed_at:.2f} s after kill"
            )
            poll(lambda: len(st.sim.frames_for(st.sim.connection_count)) > 50, "traffic")
            standby.send_signal(signal.SIGTERM)
            assert standby.wait(60) == 0
            reader.join(10)
            err = "".join(said)
            assert f"standing by: account main is recorded by pid {first.pid}" in err, err
            assert "reason=shutdown" in err
        finally:
            for p in (first, standby):
                if p is not None and p.poll() is None:
                    p.kill()
        st.call(st.sim.pause)
        sessions = st.sim.connection_count
        sent = {n: st.sim.frames_for(n) for n in range(1, sessions + 1)}

    report = verify(engine, "main")
    assert report.ok, report.broken
    stored = list(EventLog(engine).iterate("main"))
    by_session: dict[int | None, list[str]] = {}
    for e in stored:
        if not e.kind.startswith(("recorder.", "rest.")):  # the socket's frames
            by_session.setdefault(e.session_id, []).append(e.frame)
    frames_per_session = [by_session[s] for s in sorted(k for k in by_session if k is not None)]
    assert len(frames_per_session) == sessions
    for n, recorded in enumerate(frames_per_session, start=1):
        # Each session's frames once, verbatim, in order; the killed one lost only its
        # uncommitted tail (and no later frame of it was committed).
        assert recorded and recorded == sent[n][: len(recorded)], n
    live = everything(engine, "main")
    rebuild(engine, ["main"])
    assert everything(engine, "main") == live
    engine.dispose()


def test_rebuild_refuses_while_the_account_is_recorded(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    engine = create_engine(DatabaseConfig(url=url))
    migrate.upgrade(engine)
    EventLog(engine).append(frames("main", 1, 5), {})
    holder = lease_for(engine, "main")
    assert holder.try_acquire()  # as a running recorder would
    result = CliRunner().invoke(main, ["rebuild"], env={"BFX_RECORDER_DATABASE_URL": url})
    assert result.exit_code == 2, result.output
    assert f"account main is recorded by pid {os.getpid()}" in result.output
    assert "stop it before rebuilding" in result.output
    holder.release()
    result = CliRunner().invoke(main, ["rebuild"], env={"BFX_RECORDER_DATABASE_URL": url})
    assert result.exit_code == 0, result.output
    engine.dispose()


# --- transient store errors -----------------------------------------------------------------


@pytest.mark.parametrize("rest", REST_CASES)
async def test_disk_full_sqlite_daemon_stays_up_and_loses_nothing(
    tmp_path: Path, rest: str
) -> None:
    """SQLITE_FULL (``PRAGMA max_page_count`` lowered on every connection by this test's
    hook): the writer keeps its batch, projectors wait, the session ends with
    database-unavailable, and everything recovers when there is room again."""
    engine = create_engine(DatabaseConfig(url=f"sqlite:///{tmp_path / 'full.db'}"))
    migrate.upgrade(engine)
    limit = [1 << 30]

    @sa.event.listens_for(engine, "checkout")
    def cap(dbapi_conn: Any, *_: Any) -> None:
        dbapi_conn.execute(f"PRAGMA max_page_count = {limit[0]}")

    sim = Simulator(seed=61, rate=400, api_keys={DAEMON_KEY: DAEMON_SECRET}, connection_limit=None)
    cfg_writer = WriterConfig(batch_max_ms=5, queue_size=50, unavailable_timeout_s=0.5)
    async with trio.open_nursery() as nursery:
        recorder = await start_recording(
            nursery, sim, engine, writer=cfg_writer, rest_port=rest_port_for(rest)
        )
        await progressed(recorder, 100)
        with engine.connect() as conn:
            pages = int(conn.exec_driver_sql("PRAGMA page_count").scalar_one())
        limit[0] = pages + 1  # the disk is full
        await wait_until(lambda: not sim.connections, "the session gave up on the database")
        assert recorder.writer.stats.retries > 0 and not recorder.finished.is_set()
        limit[0] = 1 << 30  # room again
        status = recorder.status["main"]
        await wait_until(lambda: status.sessions >= 2 and status.connected, "reconnected")
        await progressed(recorder, 100)
        await quiesce(sim, recorder, engine)
        recorder.stop()
        with trio.fail_after(20):
            await recorder.finished.wait()
        nursery.cancel_scope.cancel()
    with engine.connect() as conn:
        reasons = [
            r for (r,) in conn.execute(sa.text("SELECT end_reason FROM sessions ORDER BY id"))
        ]
    assert reasons[0] == "database-unavailable" and reasons[-1] == "shutdown"
    stored = list(EventLog(engine).iterate("main"))
    for n, sid in enumerate(sorted({e.session_id for e in stored if e.session_id}), start=1):
        recorded = [
            e.frame
            for e in stored
            if e.session_id == sid and not e.kind.startswith(("recorder.", "rest."))
        ]
        assert recorded and recorded == sim.frames_for(n)[: len(recorded)]
    assert verify(engine, "main").ok
    engine.dispose()


class ThrowawayPostgres:
    """A PostgreSQL cluster of this test's own (initdb + pg_ctl on a free port, in a temporary
    directory), so that it can be restarted without touching the shared server."""

    def __init__(self, root: Path) -> None:
        self.dir = root / "pgdata"
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        subprocess.run([*self.as_postgres, *args], check=True, capture_output=True, timeout=120)

    def init(self) -> None:
        if shutil.which("initdb") is None or shutil.which("pg_ctl") is None:
            pytest.skip("initdb/pg_ctl not found: no throwaway PostgreSQL cluster")
        self.dir.parent.chmod(0o777)
        self._run("initdb", "-D", str(self.dir), "-A", "trust", "-U", "postgres", "--no-sync")
        self.start()

    def start(self) -> None:
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        log = str(self.dir.parent / "server.log")  # not our pipes: pg_ctl would never return
        self._run("pg_ctl", "-D", str(self.dir), "-l", log, "-o", options, "-w", "start")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.dir), "-m", "fast", "-w", "stop")


@pytest.mark.postgres
@pytest.mark.slow
@pytest.mark.parametrize("rest", REST_CASES)
async def test_postgres_restart_loses_nothing_and_recovers_without_restart(
    tmp_path: Path, rest: str
) -> None:
    server = ThrowawayPostgres(Path(tempfile.mkdtemp(prefix="bfx-pg-")))
    server.init()
    engine = create_engine(DatabaseConfig(url=server.url))
    try:
        migrate.upgrade(engine)
        lease = lease_for(engine, "main")
        assert lease.try_acquire()
        sim = Simulator(
            seed=62, rate=300, api_keys={DAEMON_KEY: DAEMON_SECRET}, connection_limit=None
        )
        cfg_writer = WriterConfig(batch_max_ms=5, unavailable_timeout_s=30)
        async with trio.open_nursery() as nursery:
            recorder = await start_recording(
                nursery,
                sim,
                engine,
                writer=cfg_writer,
                leases=[lease],
                lease_check_every=0.2,
                rest_port=rest_port_for(rest),
            )
            await progressed(recorder, 100)
            await trio.to_thread.run_sync(server.stop)  # every connection is cut
            retries = recorder.writer.stats.retries
            await wait_until(lambda: recorder.writer.stats.retries > retries, "writer retrying")
            await trio.to_thread.run_sync(server.start)
            await progressed(recorder, 200)  # recovered by itself
            assert not recorder.finished.is_set()
            await wait_until(lambda: recorder.leases.get("main") is lease, "lease kept")
            await quiesce(sim, recorder, engine)
            recorder.stop()
            with trio.fail_after(20):
                await recorder.finished.wait()
            nursery.cancel_scope.cancel()
        assert recorder.writer.stats.retries > 0
        stored = list(EventLog(engine).iterate("main"))
        sessions = sorted({e.session_id for e in stored if e.session_id})
        for n, sid in enumerate(sessions, start=1):
            recorded = [
                e.frame
                for e in stored
                if e.session_id == sid and not e.kind.startswith(("recorder.", "rest."))
            ]
            assert recorded and recorded == sim.frames_for(n)[: len(recorded)]
        assert verify(engine, "main").ok
    finally:
        engine.dispose()
        server.stop()
        shutil.rmtree(server.dir.parent, ignore_errors=True)


# --- guards, chain anchoring, signals ---------------------------------------------------------


def cli(url: str, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), env={"BFX_RECORDER_DATABASE_URL": url})
    return result.exit_code, result.output


def test_downgrade_below_the_log_refuses_while_it_holds_events(db_url: str) -> None:
    engine = create_engine(DatabaseConfig(url=db_url))
    migrate.upgrade(engine)
    EventLog(engine).append(frames("main", 1, 3), {})
    code, out = cli(db_url, "db", "downgrade", "base")
    assert code == 2, out
    assert "drops the events table, which holds 3 events" in out and "--destroy-history" in out
    assert migrate.current(engine) == migrate.head()  # nothing was done
    code, out = cli(db_url, "db", "downgrade", "0002")  # keeps the log: allowed
    assert code == 0, out
    code, out = cli(db_url, "db", "downgrade", "base", "--destroy-history")
    assert code == 0, out
    assert migrate.current(engine) is None
    engine.dispose()


def test_verify_head_catches_a_truncated_tail(db_url: str, tmp_path: Path) -> None:
    engine = create_engine(DatabaseConfig(url=db_url))
    migrate.upgrade(engine)
    EventLog(engine).append(frames("main", 1, 20) + frames("other", 1, 5), {})
    code, out = cli(db_url, "head")
    assert code == 0, out
    lines = dict(line.split(" ", 1) for line in out.splitlines())
    last_id, last_hash = EventLog(engine).head("main")
    assert lines["main"] == f"{last_id}:{last_hash}"
    code, as_json = cli(db_url, "head", "--json")
    kept = tmp_path / "heads.json"
    kept.write_text(as_json)
    assert cli(db_url, "verify", "--head", lines["main"])[0] == 0
    assert cli(db_url, "verify", "--heads", str(kept))[0] == 0
    with engine.begin() as conn:  # remove the tail behind the triggers' back
        if engine.dialect.name == "postgresql":
            conn.exec_driver_sql("DROP TRIGGER events_no_update_delete ON events")
        else:
            conn.exec_driver_sql("DROP TRIGGER events_no_delete")
        conn.execute(
            sa.text("DELETE FROM events WHERE account = 'main' AND id > :i"), {"i": last_id - 3}
        )
    code, out = cli(db_url, "verify")
    assert code == 0, out  # the chain that is left is intact: only the kept head can tell
    code, out = cli(db_url, "verify", "--head", lines["main"])
    assert code == 1 and f"kept head {last_id}:" in out and "missing" in out
    code, out = cli(db_url, "verify", "--heads", str(kept))
    assert code == 1 and "the log was altered" in out
    code, out = cli(db_url, "verify", "--head", "12:nothex")
    assert code == 2 and "is not ID:HASH" in out
    engine.dispose()


class Lines:
    """A process's stderr, read line by line in a thread (to wait for a line)."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        assert proc.stderr is not None
        stream = proc.stderr
        self.thread = threading.Thread(
            target=lambda: self.lines.extend(iter(stream.readline, "")), daemon=True
        )
        self.thread.start()

    def wait_for(self, text: str) -> None:
        poll(lambda: any(text in line for line in self.lines), repr(text))

    def text(self) -> str:
        self.thread.join(10)
        return "".join(self.lines)


@pytest.mark.slow
def test_second_signal_does_not_abort_the_drain_and_a_third_forces(tmp_path: Path) -> None:
    """The drain is held up (the test holds SQLite's write lock), so each signal surely
    arrives while it runs: the second is noted and ignored, a third forces exit 1."""
    for signals, expected in ((2, 0), (3, 1)):
        db = tmp_path / f"s{signals}.db"
        url = f"sqlite:///{db}"
        with SimThread(seed=63, rate=200, api_keys={KEY: SECRET}, connection_limit=None) as st:
            cfg = run_config(tmp_path, url, st.port)
            proc = start(cfg, "run")
            said = Lines(proc)
            blocker = sqlite3.connect(db, timeout=30, isolation_level=None)
            try:
                poll(lambda: len(st.sim.frames_for(1)) > 100, "recording")
                blocker.execute("BEGIN IMMEDIATE")  # the writer cannot commit now
                proc.send_signal(signal.SIGTERM)
                said.wait_for("stopping: draining")
                proc.send_signal(signal.SIGTERM)
                said.wait_for("already stopping")
                if signals == 3:
                    proc.send_signal(signal.SIGTERM)
                    proc.wait(30)
                blocker.execute("ROLLBACK")  # the drain can finish
                proc.wait(60)
            finally:
                blocker.close()
                if proc.poll() is None:
                    proc.kill()
        err = said.text()
        assert proc.returncode == expected, err
        assert "Traceback" not in err and "Aborted" not in err
        if expected == 0:
            assert "reason=shutdown" in err and "recorder stopped" in err
            engine = create_engine(DatabaseConfig(url=url))
            assert verify(engine, "main").ok
            engine.dispose()
        else:
            assert "forced exit before the drain finished" in err


@pytest.mark.postgres
@pytest.mark.slow
def test_run_waits_for_a_database_that_is_not_up_yet(tmp_path: Path) -> None:
    server = ThrowawayPostgres(Path(tempfile.mkdtemp(prefix="bfx-pg-")))
    server.init()
    server.stop()  # the database is down when the daemon starts
    try:
        with SimThread(seed=64, rate=50, api_keys={KEY: SECRET}, connection_limit=None) as st:
            cfg = run_config(tmp_path, server.url + "?connect_timeout=2", st.port)
            proc = start(cfg, "run")
            said = Lines(proc)
            try:
                said.wait_for("waiting for the database")
                assert proc.poll() is None and not st.sim.auth_requests
                server.start()
                poll(lambda: len(st.sim.auth_requests) >= 1, "recording once it is up")
                proc.send_signal(signal.SIGTERM)
                proc.wait(60)
            finally:
                if proc.poll() is None:
                    proc.kill()
        err = said.text()
        assert proc.returncode == 0, err
        assert err.count("waiting for the database") == 1  # one line per interval, not a flood
        assert "Traceback" not in err
    finally:
        server.stop()
        shutil.rmtree(server.dir.parent, ignore_errors=True)


@pytest.mark.slow
def test_kill_9_during_rebuild_leaves_a_consistent_prefix(tmp_path: Path) -> None:
    """SIGKILL in the middle of `rebuild`: the log is untouched, the lease is free again, and
    projectors that resume from what the killed rebuild committed (as a restarted daemon
    would) give exactly the rows of a full rebuild."""
    url = f"sqlite:///{tmp_path / 'rb.db'}"
    engine = create_engine(DatabaseConfig(url=url))
    migrate.upgrade(engine)
    store_log(engine, "main", synthetic_log(7, 15000, 0, 400))
    cfg = tmp_path / "rb.toml"
    cfg.write_text(f'[database]\nurl = "{url}"\n')

    def folded_something() -> bool:
        with engine.connect() as conn:
            return bool(conn.execute(sa.select(sa.func.count()).select_from(checkpoints)).scalar())

    proc = start(cfg, "rebuild")
    try:
        poll(folded_something, "the rebuild's first committed batch", timeout=60)
        proc.kill()
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL  # it was killed mid-way, not finished
    assert verify(engine, "main").ok
    AccountProjector(engine, "main").catch_up()  # what the daemon does at its next start
    resumed = everything(engine, "main")
    code, out = cli(url, "rebuild")  # the killed process's lease died with it
    assert code == 0, out
    assert everything(engine, "main") == resumed
    engine.dispose()
