"""`bfx-recorder run` as a process: signals, exit codes, configuration errors."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
import sqlalchemy as sa

from recorder.config import DatabaseConfig
from recorder.store.engine import create_engine
from recorder.store.schema import events, sessions
from tests.helpers import SimThread, poll

KEY = "run-command-key"
SECRET = "run-command-secret-e2b1c9d04f"


def write_config(tmp_path: Path, port: int, db: Path) -> Path:
    cfg = tmp_path / "recorder.toml"
    cfg.write_text(
        f'[database]\nurl = "sqlite:///{db}"\n'
        f'[[accounts]]\nname = "main"\nurl = "ws://127.0.0.1:{port}/ws/2"\n'
        'api_key_env = "TEST_BFX_KEY"\napi_secret_env = "TEST_BFX_SECRET"\nbackfill = false\n'
    )
    return cfg


@pytest.mark.slow
def test_sigterm_during_burst_commits_everything_read(tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    with SimThread(seed=30, rate=50, api_keys={KEY: SECRET}, connection_limit=None) as st:
        cfg = write_config(tmp_path, st.port, db)
        env = {**os.environ, "TEST_BFX_KEY": KEY, "TEST_BFX_SECRET": SECRET}
        proc = subprocess.Popen(
            [sys.executable, "-m", "recorder", "run", "--config", str(cfg)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            poll(lambda: bool(st.sim.auth_requests), "the recorder's auth", timeout=20)
            # The snapshots and some updates have gone out.
            poll(lambda: len(st.sim.frames_for(1)) >= 20, "the first frames", timeout=20)
            st.spawn(st.sim.inject, "burst", 200_000)
            poll(lambda: len(st.sim.sent_log) >= 5000, "the burst under way", timeout=20)
            proc.send_signal(signal.SIGTERM)
            t0 = time.monotonic()
            out, err = proc.communicate(timeout=30)
            stopped_in = time.monotonic() - t0
        finally:
            if proc.poll() is None:
                proc.kill()
        st.call(st.sim.pause)
        sent = st.sim.frames_for(1)
    assert proc.returncode == 0, err
    assert stopped_in < 10
    assert "session end" in err and "reason=shutdown" in err
    assert SECRET not in out + err
    engine = create_engine(DatabaseConfig(url=f"sqlite:///{db}"))
    with engine.connect() as conn:
        rows = list(conn.execute(events.select().order_by(events.c.id)))
        sess = list(conn.execute(sessions.select()))
    engine.dispose()
    assert [s.end_reason for s in sess] == ["shutdown"]
    recorded = [r.frame for r in rows if not r.kind.startswith("recorder.")]
    assert len(recorded) > 1000  # the signal came in the middle of the burst
    assert recorded == sent[: len(recorded)]  # verbatim, in order, no hole
    assert rows[-1].kind == "recorder.disconnected"
    assert orjson.loads(rows[-1].frame)["reason"] == "shutdown"


def test_run_without_credentials_names_the_variable(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, 1, tmp_path / "x.db")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TEST_BFX_")}
    proc = subprocess.run(
        [sys.executable, "-m", "recorder", "run", "--config", str(cfg)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "TEST_BFX_KEY" in proc.stderr and "Traceback" not in proc.stderr


def test_run_with_bad_credentials_exits_2(tmp_path: Path) -> None:
    """A key the exchange rejects with a final code: exit 2, which the unit does not restart
    on (RestartPreventExitStatus=2), instead of retrying a rejected key every 5 s."""
    db = tmp_path / "r.db"
    with SimThread(seed=31, rate=0, api_keys={KEY: SECRET}, connection_limit=None) as st:
        cfg = write_config(tmp_path, st.port, db)
        env = {**os.environ, "TEST_BFX_KEY": KEY, "TEST_BFX_SECRET": "not-the-secret"}
        proc = subprocess.run(
            [sys.executable, "-m", "recorder", "run", "--config", str(cfg)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert proc.returncode == 2
    assert "account main stopped: authentication failed with code 10100" in proc.stderr
    engine = create_engine(DatabaseConfig(url=f"sqlite:///{db}"))
    with engine.connect() as conn:
        status = conn.execute(sa.select(sessions.c.auth_status, sessions.c.end_reason)).all()
    engine.dispose()
    assert status == [("FAILED", "auth-failed")]


# --- a signal during the start-up (before trio runs) --------------------------------------


def _signal_inside_set_name() -> None:
    """What the daemon met once in CI: SIGTERM while an import ran a class body's
    ``__set_name__`` (SQLAlchemy's PostgreSQL dialect, imported by the first connect)."""

    class Field:
        def __set_name__(self, owner: type, name: str) -> None:
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(1000):  # the handler runs between bytecodes, here
                pass

    class Range:
        bounds = Field()

    del Range


def test_a_start_up_signal_exits_0_even_when_python_wraps_its_exception() -> None:
    from recorder.commands.common import StartupSignals

    startup = StartupSignals(0)
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    startup.install()
    try:
        with pytest.raises(SystemExit) as stopped, startup.guard():
            _signal_inside_set_name()
        assert stopped.value.code == 0
        assert startup.received == [signal.SIGTERM]
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)


def test_a_start_up_signal_whose_exception_was_swallowed_still_ends_it() -> None:
    """The handler's exception dropped (raised in a finalizer, say): the guard's block ends
    normally, the noted signal still exits; a waiting loop sees it before it connects."""
    from recorder.commands.common import StartupSignals
    from recorder.commands.run import wait_for_database
    from recorder.config import Config

    startup = StartupSignals(0)
    with pytest.raises(SystemExit) as stopped, startup.guard():
        startup.received.append(signal.SIGTERM)  # noted, its SystemExit gone
    assert stopped.value.code == 0
    cfg = Config(database=DatabaseConfig(url="postgresql+psycopg://postgres@127.0.0.1:9/x"))
    with pytest.raises(SystemExit) as waited:
        wait_for_database(cfg, startup.stopping)
    assert waited.value.code == 0


def test_without_a_signal_the_start_ups_errors_are_its_own() -> None:
    from recorder.commands.common import StartupSignals

    with pytest.raises(RuntimeError, match="not a signal"), StartupSignals(0).guard():
        raise RuntimeError("not a signal")
    with StartupSignals(0).guard():
        pass  # nothing happens
