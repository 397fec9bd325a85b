"""Commands: read-only commands never create or migrate a database, unknown accounts and old
schemas are usage errors (exit 2, one line, the fix), an unreachable database is exit 1 in
one line. Every failure the same way, never a traceback."""

from __future__ import annotations

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


def test_every_command_loads_and_has_help() -> None:
    for name in COMMANDS:
        result = CliRunner().invoke(main, [name, "--help"])
        assert result.exit_code == 0, (name, result.output)
        assert "Usage:" in result.output
