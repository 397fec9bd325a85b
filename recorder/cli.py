"""The ``bfx-recorder`` command line.

Every command takes ``--config FILE`` after its name and validates the configuration first. A
:class:`~recorder.config.ConfigError` becomes one line on stderr and exit code 2, never a
traceback (and never a secret: the error texts are built from key names only).
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from recorder import config as config_mod
from recorder.config import Config, ConfigError

F = TypeVar("F", bound=Callable[..., Any])

EXIT_FAILURE = 1
EXIT_USAGE = 2


def _fail_config(exc: ConfigError) -> None:
    click.echo(f"bfx-recorder: {exc}", err=True)
    sys.exit(EXIT_USAGE)


def with_config(func: F) -> F:
    """Add ``--config FILE`` and pass the validated :class:`Config` as ``cfg``."""

    @click.option(
        "--config",
        "config_path",
        type=click.Path(dir_okay=False),
        default=None,
        help="TOML configuration file (default: $BFX_RECORDER_CONFIG, then config/recorder.toml).",
    )
    @functools.wraps(func)
    def wrapper(*args: Any, config_path: str | None, **kwargs: Any) -> Any:
        try:
            cfg = config_mod.load(config_path)
        except ConfigError as exc:
            _fail_config(exc)
        try:
            return func(*args, cfg=cfg, **kwargs)
        except ConfigError as exc:
            _fail_config(exc)

    return wrapper  # type: ignore[return-value]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="bfx-account-recorder")
def main() -> None:
    """Record a Bitfinex account's WebSocket history into SQL, project it, replay it."""


# --- config ----------------------------------------------------------------------------------


@main.group("config")
def config_group() -> None:
    """Inspect the configuration."""


@config_group.command("check")
@with_config
def config_check(cfg: Config) -> None:
    """Validate the configuration and print the effective settings (secrets as set/unset)."""
    click.echo(json.dumps(config_mod.describe(cfg), indent=2))


# --- db --------------------------------------------------------------------------------------


@main.group("db")
def db_group() -> None:
    """Schema migrations (Alembic) against the configured database."""


def _engine(cfg: Config) -> Any:
    from recorder.store.engine import create_engine

    return create_engine(cfg.database)


@db_group.command("upgrade")
@click.argument("revision", default="head")
@with_config
def db_upgrade(cfg: Config, revision: str) -> None:
    """Upgrade the schema to REVISION (default: head)."""
    from recorder.store import migrate

    engine = _engine(cfg)
    try:
        migrate.upgrade(engine, revision)
        click.echo(
            f"database {config_mod.redact_url(cfg.database.url)} at {migrate.current(engine)}"
        )
    finally:
        engine.dispose()


@db_group.command("current")
@with_config
def db_current(cfg: Config) -> None:
    """Print the schema revision of the configured database."""
    from recorder.store import migrate

    engine = _engine(cfg)
    try:
        rev = migrate.current(engine)
        head = migrate.head()
        state = "up to date" if rev == head else f"head is {head}"
        click.echo(f"{rev or 'empty (no revision)'} ({state})")
    finally:
        engine.dispose()


@db_group.command("downgrade")
@click.argument("revision")
@with_config
def db_downgrade(cfg: Config, revision: str) -> None:
    """Downgrade the schema to REVISION ('base' removes every table)."""
    from recorder.store import migrate

    engine = _engine(cfg)
    try:
        migrate.downgrade(engine, revision)
        click.echo(f"database at {migrate.current(engine) or 'base'}")
    finally:
        engine.dispose()


# --- run and demo ----------------------------------------------------------------------------


@main.command("run")
@with_config
def run_cmd(cfg: Config) -> None:
    """Record every configured account until SIGINT/SIGTERM."""
    from recorder.runner import run

    sys.exit(run(cfg))


@main.command("demo")
@click.option("--seconds", type=float, default=20.0, show_default=True, help="How long to record.")
@click.option("--seed", type=int, default=1, show_default=True, help="Simulator seed.")
@click.option("--rate", type=float, default=50.0, show_default=True, help="Frames per second.")
@click.option(
    "--faults",
    default="malformed@4/10,drop@7/20,info-20051@13/20",
    show_default=True,
    help="Simulator fault schedule ('' for none); see `simulate --help`.",
)
@with_config
def demo_cmd(cfg: Config, seconds: float, seed: int, rate: float, faults: str) -> None:
    """Record a simulated account (no Bitfinex account needed) into the configured database."""
    from recorder.demo import run_demo

    sys.exit(run_demo(cfg, seconds=seconds, seed=seed, rate=rate, faults=faults))


# --- rebuild ---------------------------------------------------------------------------------


@main.command("rebuild")
@click.option("--projection", default=None, help="Only this projection (a table name).")
@click.option("--account", default=None, help="Only this account (default: every account).")
@with_config
def rebuild_cmd(cfg: Config, projection: str | None, account: str | None) -> None:
    """Clear projections and refold them from the whole event log."""
    from recorder.projections.cli import run_rebuild

    sys.exit(run_rebuild(cfg, projection, account))


# --- replay, state, serve-replay, verify, status --------------------------------------------


@main.command("replay")
@click.option("--account", default=None)
@click.option("--from", "start", default=None, help="ISO 8601 time (UTC if no zone).")
@click.option("--to", "end", default=None, help="ISO 8601 time (UTC if no zone).")
@with_config
def replay_cmd(cfg: Config, account: str | None, start: str | None, end: str | None) -> None:
    """The recorded frames as JSON lines (id, account, received_at, kind, frame), in log order."""
    from recorder.replay.cli import run_replay

    sys.exit(run_replay(cfg, account, start, end))


@main.command("state")
@click.option("--account", default=None)
@click.option("--at", default=None, help="ISO 8601 time (default: now).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of tables.")
@with_config
def state_cmd(cfg: Config, account: str | None, at: str | None, as_json: bool) -> None:
    """Open orders, active positions and wallets as of a time, folded from the log."""
    from recorder.replay.cli import run_state

    sys.exit(run_state(cfg, account, at, as_json))


@main.command("serve-replay")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, required=True, help="TCP port (0 picks a free one).")
@click.option("--account", default=None)
@click.option("--from", "start", default=None)
@click.option("--to", "end", default=None)
@click.option(
    "--speed",
    type=float,
    default=1.0,
    show_default=True,
    help="Divide the recorded spacing by this; 0 sends as fast as possible.",
)
@click.option("--api-key", default=None, help="Check clients' auth against this key.")
@click.option(
    "--api-secret",
    default=None,
    envvar="BFX_REPLAY_API_SECRET",
    help="Its secret (or $BFX_REPLAY_API_SECRET).",
)
@with_config
def serve_replay_cmd(
    cfg: Config,
    host: str,
    port: int,
    account: str | None,
    start: str | None,
    end: str | None,
    speed: float,
    api_key: str | None,
    api_secret: str | None,
) -> None:
    """A WebSocket server speaking Bitfinex v2 that replays the recorded account."""
    from recorder.replay.cli import run_serve_replay

    sys.exit(run_serve_replay(cfg, host, port, account, start, end, speed, api_key, api_secret))


@main.command("verify")
@click.option("--account", default=None)
@with_config
def verify_cmd(cfg: Config, account: str | None) -> None:
    """Check the hash chain and list every gap; exit 1 if the chain is broken."""
    from recorder.replay.cli import run_verify

    sys.exit(run_verify(cfg, account))


@main.command("status")
@with_config
def status_cmd(cfg: Config) -> None:
    """Per account: connected, last frame age, events, projector lag (exit 1 past bounds)."""
    from recorder.replay.cli import run_status

    sys.exit(run_status(cfg))


# --- simulate --------------------------------------------------------------------------------


@main.command("simulate")
@click.option("--port", type=int, required=True, help="TCP port (0 picks a free one).")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--api-key", default=None, help="API key the simulator accepts.")
@click.option(
    "--api-secret",
    default=None,
    envvar="BFX_SIM_API_SECRET",
    help="Its secret (or $BFX_SIM_API_SECRET, which keeps it out of the process list).",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--rate", type=float, default=20.0, show_default=True, help="Frames per second.")
@click.option("--faults", default="", help="Fault schedule, e.g. 'drop@30,stall:60@90/300'.")
@click.option(
    "--truth",
    "truth_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write the true account state here on exit and on SIGUSR1.",
)
@click.option("--heartbeat", type=float, default=15.0, show_default=True)
@click.option("--no-rate-limit", is_flag=True, help="Accept more than 5 connections per 15 s.")
@with_config
def simulate(
    cfg: Config,
    port: int,
    host: str,
    api_key: str | None,
    api_secret: str | None,
    seed: int,
    rate: float,
    faults: str,
    truth_path: str | None,
    heartbeat: float,
    no_rate_limit: bool,
) -> None:
    """Run the simulated Bitfinex exchange until SIGINT/SIGTERM."""
    from recorder.simulator.cli import run_simulator

    run_simulator(
        cfg,
        port=port,
        host=host,
        api_key=api_key,
        api_secret=api_secret,
        seed=seed,
        rate=rate,
        faults=faults,
        truth_path=truth_path,
        heartbeat=heartbeat,
        rate_limit=not no_rate_limit,
    )


if __name__ == "__main__":  # pragma: no cover
    main()
