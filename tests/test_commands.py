"""Commands: read-only commands never create or migrate a database, unknown accounts and old
schemas are usage errors (exit 2, one line, the fix), an unreachable database is exit 1 in
one line. Every failure the same way, never a traceback."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from recorder.cli import COMMANDS, main
from recorder.config import DatabaseConfig
from recorder.store import migrate
from recorder.store.engine import create_engine
from recorder.store.eventlog import EventLog, NewEvent
from recorder.upstream.connection import HandshakeFailed, connect

READ_ONLY = [
    ["verify"],
    ["status"],
    ["state", "--account", "a"],
    ["replay"],
    ["serve-replay", "--port", "0"],
    ["db", "current"],
]


def cli(url: str, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), env={"BFX_RECORDER_DATABASE_URL": url})
    return result.exit_code, result.output


def recorded(url: str) -> sa.Engine:
    engine = create_engine(DatabaseConfig(url=url))
    migrate.upgrade(engine)
    at = datetime(2026, 11, 27, tzinfo=UTC)
    EventLog(engine).append(
        [NewEvent(a, None, at, 0, "hb", None, None, '[0,"hb"]') for a in ("a", "b")], {}
    )
    return engine


@pytest.mark.parametrize("args", READ_ONLY, ids=lambda a: " ".join(a))
def test_read_only_commands_never_create_a_database(tmp_path: Path, args: list[str]) -> None:
    db = tmp_path / "missing.db"
    code, out = cli(f"sqlite:///{db}", *args)
    assert code == 2, out
    assert f"there is no database at {db}" in out and "Traceback" not in out
    assert not db.exists()


@pytest.mark.parametrize("args", [a for a in READ_ONLY if a != ["db", "current"]])
def test_read_only_commands_never_migrate(tmp_path: Path, args: list[str]) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = recorded(url)
    migrate.downgrade(engine, "0002")
    engine.dispose()
    code, out = cli(url, *args)
    assert code == 2, out
    assert "the schema is at 0002" in out and "run `bfx-recorder db upgrade`" in out
    check = create_engine(DatabaseConfig(url=url))
    assert migrate.current(check) == "0002"  # untouched
    check.dispose()


@pytest.mark.parametrize(
    "args",
    [
        ["verify", "--account", "nosuch"],
        ["state", "--account", "nosuch"],
        ["replay", "--account", "nosuch"],
        ["rebuild", "--account", "nosuch"],
        ["serve-replay", "--port", "0", "--account", "nosuch"],
    ],
    ids=lambda a: a[0],
)
def test_unknown_account_is_a_usage_error_listing_the_known(
    tmp_path: Path, args: list[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    recorded(url).dispose()
    code, out = cli(url, *args)
    assert code == 2, out
    assert "no events for account 'nosuch'" in out and "use one of a, b" in out


def test_unreachable_database_is_one_line_and_exit_1() -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"postgresql+psycopg://postgres@127.0.0.1:{port}/nothing?connect_timeout=2"
    for args in (["verify"], ["status"], ["db", "current"]):
        proc = subprocess.run(
            [sys.executable, "-m", "recorder", *args],
            env={"BFX_RECORDER_DATABASE_URL": url, "PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 1, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1, proc.stderr
        assert lines[0].startswith(
            f"bfx-recorder: database postgresql+psycopg://postgres@127.0.0.1:{port}"
        )
        assert "database unavailable" in lines[0]


def test_exit_skips_the_final_collections_after_the_other_handlers(tmp_path: Path) -> None:
    """The command line's exit handler freezes what is left (the interpreter's last
    collections skip it), after the handlers registered after it; logging still flushes
    the file it writes to."""
    code = (
        "import atexit, gc, logging, sys\n"
        "import recorder.cli\n"
        "logging.basicConfig(filename=sys.argv[1], level=logging.INFO)\n"
        "logging.getLogger('t').info('last words')\n"
        "atexit.register(lambda: print('frozen before', gc.get_freeze_count()))\n"
        "atexit._run_exitfuncs()\n"
        "print('frozen after', gc.get_freeze_count())\n"
    )
    log_file = tmp_path / "t.log"
    proc = subprocess.run(
        [sys.executable, "-c", code, str(log_file)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    before, after = (int(line.split()[-1]) for line in proc.stdout.splitlines())
    assert before == 0 and after > 1000
    assert "last words" in log_file.read_text()


def test_every_command_loads_and_has_help() -> None:
    for name in COMMANDS:
        result = CliRunner().invoke(main, [name, "--help"])
        assert result.exit_code == 0, (name, result.output)
        assert "Usage:" in result.output


@pytest.mark.parametrize("command", ["simulate", "serve-replay"])
def test_a_port_in_use_is_one_line_and_exit_1(tmp_path: Path, command: str) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    recorded(url).dispose()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run(
            [sys.executable, "-m", "recorder", command, "--port", str(port), "--account", "a"]
            if command == "serve-replay"
            else [sys.executable, "-m", "recorder", command, "--port", str(port)],
            env={**os.environ, "BFX_RECORDER_DATABASE_URL": url},
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines[-1] == (
        f"bfx-recorder: cannot listen on 127.0.0.1:{port}: Address already in use; "
        "fix: choose another --port"
    )
    assert "Traceback" not in proc.stderr


async def test_a_refused_connection_is_logged_with_its_cause() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(HandshakeFailed, match="Connection refused"):
        async with connect(f"ws://127.0.0.1:{port}/ws/2"):
            pass


def test_state_before_the_first_event_says_so(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    recorded(url).dispose()
    code, out = cli(url, "state", "--account", "a", "--at", "2020-01-01T00:00:00Z")
    assert code == 0, out
    assert "nothing recorded at or before 2020-01-01T00:00:00+00:00" in out
    assert "the log of a starts at 2026-11-27" in out


def test_readme_links_only_to_files_in_the_repository() -> None:
    root = Path(__file__).resolve().parents[1]
    text = (root / "README.md").read_text()
    assert "../shared" not in text
    for target in re.findall(r"\]\(([^)#]+)\)", text):
        if "://" not in target:
            assert (root / target).exists(), target
