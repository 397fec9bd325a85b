from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
from click.testing import CliRunner

from recorder import config as config_mod
from recorder.cli import main

EXAMPLE = Path(__file__).resolve().parent.parent / "config" / "recorder.example.toml"
SECRET = "s3cr3t-VALUE-that-must-never-be-printed-0123456789"


def run_cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), env=env or {}, catch_exceptions=False)
    return result.exit_code, result.output


def test_example_config_loads_and_documents_every_key() -> None:
    cfg = config_mod.load(EXAMPLE, environ={})
    assert cfg.accounts[0].name == "main"
    assert cfg.accounts[0].dms is False
    text = EXAMPLE.read_text()
    for section, (_cls, checks) in config_mod.SECTIONS.items():
        assert f"[{section}]" in text
        for key in checks:
            assert f"{key} =" in text, f"example lacks {section}.{key}"  # may be commented
    for key in config_mod.ACCOUNT_KEYS:
        assert f"{key} =" in text, f"example lacks accounts.{key}"


def test_defaults_without_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = config_mod.load(None, environ={})
    assert cfg.database.url == "sqlite:///recorder.db"
    assert cfg.accounts == ()


def test_env_overrides_file(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[database]\nurl = "sqlite:///a.db"\nauto_migrate = true\n')
    cfg = config_mod.load(
        path,
        environ={
            "BFX_RECORDER_DATABASE_URL": "postgresql://u@h/d",
            "BFX_RECORDER_DATABASE_AUTO_MIGRATE": "false",
        },
    )
    assert cfg.database.url == "postgresql+psycopg://u@h/d"
    assert cfg.database.auto_migrate is False


def test_config_env_variable_selects_file(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[logging]\nformat = "json"\n')
    assert config_mod.load(None, environ={"BFX_RECORDER_CONFIG": str(path)}).logging.format == (
        "json"
    )


BAD_CONFIGS = {
    "syntax": ("[database\nurl = 1\n", "recorder.toml", "syntax"),
    "unknown-key": ('[database]\nurll = "sqlite:///x.db"\n', "database.urll", "unknown key"),
    "unknown-section": ("[databse]\n", "databse", "unknown key"),
    "wrong-type": ("[database]\nauto_migrate = 'yes'\n", "database.auto_migrate", "true or false"),
    "wrong-number": ("[writer]\nbatch_max_frames = 0\n", "writer.batch_max_frames", "positive"),
    "plain-ws-remote": (
        '[[accounts]]\nname = "a"\nurl = "ws://api.bitfinex.com/ws/2"\n',
        "accounts[0].url",
        "wss://",
    ),
    "unknown-account-key": (
        '[[accounts]]\nname = "a"\napi_key = "k"\n',
        "accounts[0].api_key",
        "unknown key",
    ),
    "secret-pasted-as-env-name": (
        f'[[accounts]]\nname = "a"\napi_secret_env = "{SECRET}"\n',
        "accounts[0].api_secret_env",
        "environment variable name",
    ),
    "bad-db-scheme": ('[database]\nurl = "mysql://x"\n', "database.url", "postgresql+psycopg"),
    # A URL SQLite reads as an in-memory database: the log would vanish at exit.
    "sqlite-two-slashes": ('[database]\nurl = "sqlite://recorder.db"\n', "database.url", "three"),
    "sqlite-in-memory": ('[database]\nurl = "sqlite://"\n', "database.url", "in memory"),
    "sqlite-missing-folder": (
        '[database]\nurl = "sqlite:////no-such-folder-bfx/recorder.db"\n',
        "database.url",
        "mkdir -p /no-such-folder-bfx",
    ),
    "nan-period": (
        '[[accounts]]\nname = "a"\nheartbeat_period_s = nan\n',
        "accounts[0].heartbeat_period_s",
        "from 1 to 3600",
    ),
    "absurd-heartbeat": (
        '[[accounts]]\nname = "a"\nheartbeat_period_s = 1e-9\n',
        "accounts[0].heartbeat_period_s",
        "from 1 to 3600",
    ),
    "absurd-summary": (
        "[logging]\nsummary_interval_s = 0.001\n",
        "logging.summary_interval_s",
        "from 1 to 86400",
    ),
    "zero-timeout": (
        '[[accounts]]\nname = "a"\nrest_timeout_s = 0\n',
        "accounts[0].rest_timeout_s",
        "from 1 to 600",
    ),
    "rest-url-left-to-the-exchange": (
        '[[accounts]]\nname = "a"\nurl = "ws://127.0.0.1:8765/ws/2"\n',
        "accounts[0].rest_url",
        "--rest-port",
    ),
    "metrics-exposed-without-token": (
        '[metrics]\nlisten = "0.0.0.0:9464"\n',
        "metrics.token",
        "Authorization: Bearer",
    ),
    "metrics-unresolvable": (
        '[metrics]\nlisten = "no-such-host.invalid:9464"\ntoken = "0123456789abcdef0123"\n',
        "metrics.listen",
        "cannot resolve",
    ),
    "metrics-foreign-address": (
        '[metrics]\nlisten = "192.0.2.1:9464"\ntoken = "0123456789abcdef0123"\n',
        "metrics.listen",
        "cannot listen on 192.0.2.1:9464",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_bad_config_exits_2_naming_key(tmp_path: Path, case: str) -> None:
    text, key, hint = BAD_CONFIGS[case]
    path = tmp_path / "recorder.toml"
    path.write_text(text)
    code, out = run_cli("config", "check", "--config", str(path), env={"BFX_API_SECRET": SECRET})
    assert code == 2
    lines = out.strip().splitlines()
    assert len(lines) == 1, out
    assert key in lines[0]
    assert hint in lines[0]
    assert "fix:" in lines[0]
    assert "Traceback" not in out
    assert SECRET not in out


def test_secret_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    secret_file = tmp_path / "main.secret"
    secret_file.write_text(SECRET)
    os.chmod(secret_file, 0o644)
    path = tmp_path / "c.toml"
    path.write_text(f'[[accounts]]\nname = "a"\napi_secret_file = "{secret_file}"\n')
    code, out = run_cli("config", "check", "--config", str(path))
    assert code == 2
    assert "accounts[0].api_secret_file" in out
    assert "chmod 600" in out
    assert SECRET not in out

    os.chmod(secret_file, 0o600)
    code, out = run_cli("config", "check", "--config", str(path), env={"BFX_API_KEY": "k"})
    assert code == 0, out
    shown = json.loads(out)
    assert shown["accounts"][0]["api_secret"] == "set"
    assert SECRET not in out


def test_config_check_shows_secrets_only_as_set(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[[accounts]]\nname = "main"\n')
    code, out = run_cli(
        "config",
        "check",
        "--config",
        str(path),
        env={"BFX_API_KEY": "the-key-value", "BFX_API_SECRET": SECRET},
    )
    assert code == 0
    shown = json.loads(out)
    assert shown["accounts"][0]["api_key"] == "set"
    assert shown["accounts"][0]["api_secret"] == "set"
    assert SECRET not in out and "the-key-value" not in out


def test_missing_credentials_name_the_variable() -> None:
    acc = config_mod.AccountConfig(name="main", api_secret_env="MY_SECRET")
    with pytest.raises(config_mod.ConfigError, match="BFX_API_KEY"):
        acc.credentials({})
    with pytest.raises(config_mod.ConfigError, match="MY_SECRET"):
        acc.credentials({"BFX_API_KEY": "k"})
    creds = acc.credentials({"BFX_API_KEY": "k", "MY_SECRET": SECRET})
    assert creds.api_secret.reveal() == SECRET
    assert SECRET not in repr(creds) and SECRET not in str(creds.api_secret)


def test_database_password_is_redacted() -> None:
    assert (
        config_mod.redact_url("postgresql+psycopg://u:pw@h/d") == "postgresql+psycopg://u:***@h/d"
    )


def test_db_commands_work_from_any_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    env = {"BFX_RECORDER_DATABASE_URL": f"sqlite:///{tmp_path / 'r.db'}"}
    code, out = run_cli("db", "upgrade", env=env)
    assert code == 0, out
    code, out = run_cli("db", "current", env=env)
    assert code == 0 and "up to date" in out
    code, out = run_cli("db", "downgrade", "base", env=env)
    assert code == 0 and "base" in out


def test_wheel_carries_the_migrations(tmp_path: Path) -> None:
    """A non-editable install must migrate without the source tree."""
    import subprocess
    import sys
    import zipfile

    root = EXAMPLE.parent.parent
    subprocess.run(
        [sys.executable, "-m", "hatchling", "build", "-t", "wheel", "-d", str(tmp_path)],
        cwd=root,
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "recorder/_migrations/env.py" in names
    assert any(n.startswith("recorder/_migrations/versions/0001") for n in names)


def test_config_check_fails_when_credentials_are_not_set(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[[accounts]]\nname = "main"\napi_key_env = "NOPE_KEY"\n')
    code, out = run_cli("config", "check", "--config", str(path), env={"BFX_API_SECRET": "x"})
    assert code == 2
    assert "credentials not set: NOPE_KEY (accounts.main.api_key_env)" in out
    assert "BFX_API_SECRET" not in out.splitlines()[-1]  # that one is set


def test_misspelt_override_is_named_with_the_closest_key(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main,
        ["config", "check"],
        env={"BFX_RECORDER_DATABSE_URL": "sqlite:///x.db"},
        catch_exceptions=False,
    )
    assert result.exit_code == 0
    assert (
        "environment variable BFX_RECORDER_DATABSE_URL is not a setting and is ignored; "
        "did you mean BFX_RECORDER_DATABASE_URL?"
    ) in result.output


def test_config_check_reports_where_each_value_came_from(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[writer]\nbatch_max_ms = 7\n")
    code, out = run_cli(
        "config",
        "check",
        "--config",
        str(path),
        env={"BFX_RECORDER_DATABASE_URL": f"sqlite:///{tmp_path / 'e.db'}"},
    )
    assert code == 0, out
    sources = json.loads(out)["sources"]
    assert sources["database.url"] == "environment BFX_RECORDER_DATABASE_URL"
    assert sources["writer.batch_max_ms"] == f"file {path}"
    assert sources["writer.queue_size"] == "built-in default"


def test_metrics_address_in_use_is_refused_before_anything_connects(tmp_path: Path) -> None:
    """`config check` and `run` name the key when the metrics port is taken (run used to
    authenticate, then die with a long traceback and a session without an end)."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        path = tmp_path / "recorder.toml"
        path.write_text(
            f'[database]\nurl = "sqlite:///r.db"\n[metrics]\nlisten = "127.0.0.1:{port}"\n'
            '[[accounts]]\nname = "a"\nurl = "ws://127.0.0.1:9/ws/2"\nbackfill = false\n'
        )
        env = {"BFX_API_KEY": "k", "BFX_API_SECRET": SECRET}
        for command in (["config", "check"], ["run"]):
            code, out = run_cli(*command, "--config", str(path), env=env)
            assert code == 2, out
            line = out.strip().splitlines()[-1]
            assert "metrics.listen" in line and f"127.0.0.1:{port}" in line and "fix:" in line
            assert "Traceback" not in out
    assert not (tmp_path / "r.db").exists()  # refused before the database was touched


def test_relative_sqlite_path_is_the_config_files_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "etc"
    folder.mkdir()
    path = folder / "recorder.toml"
    path.write_text('[database]\nurl = "sqlite:///data/recorder.db?x=1"\n')
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = config_mod.load(path, environ={})
    assert cfg.database.url == f"sqlite:///{folder / 'data' / 'recorder.db'}?x=1"
    # Absolute paths and values from the environment are left as they are.
    path.write_text('[database]\nurl = "sqlite:////var/lib/r.db"\n')
    assert config_mod.load(path, environ={}).database.url == "sqlite:////var/lib/r.db"
    env = {"BFX_RECORDER_DATABASE_URL": "sqlite:///here.db"}
    assert config_mod.load(path, environ=env).database.url == "sqlite:///here.db"


def test_status_from_another_folder_sees_the_daemons_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "etc"
    folder.mkdir()
    path = folder / "recorder.toml"
    path.write_text('[database]\nurl = "sqlite:///recorder.db"\n')
    monkeypatch.chdir(folder)
    code, out = run_cli("db", "upgrade", "--config", str(path))
    assert code == 0, out
    created = folder / "recorder.db"
    assert created.exists()
    assert created.stat().st_mode & 0o777 == 0o600  # the log is the account's whole history
    monkeypatch.chdir(tmp_path)
    code, out = run_cli("db", "current", "--config", str(path))
    assert code == 0, out  # found, not "there is no database"
    assert not (tmp_path / "recorder.db").exists()
