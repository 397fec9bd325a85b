"""``bfx-recorder db upgrade | current | downgrade``: Alembic migrations, from any directory."""

from __future__ import annotations

import click
from alembic.util import CommandError as AlembicCommandError

from recorder.commands.common import open_engine, with_config
from recorder.config import Config, ConfigError, redact_url
from recorder.store import migrate
from recorder.store.errors import store_errors
from recorder.store.eventlog import EventLog


@click.group("db")
def group() -> None:
    """Schema migrations (Alembic) against the configured database."""


@group.command("upgrade")
@click.argument("revision", default="head")
@with_config
def upgrade(cfg: Config, revision: str) -> None:
    """Upgrade the schema to REVISION (default: head)."""
    engine = open_engine(cfg, read_only=False, check_schema=False)
    try:
        with store_errors():
            migrate.upgrade(engine, revision)
            click.echo(f"database {redact_url(cfg.database.url)} at {migrate.current(engine)}")
    finally:
        engine.dispose()


@group.command("current")
@with_config
def current(cfg: Config) -> None:
    """Print the schema revision of the configured database (never creates one)."""
    engine = open_engine(cfg, read_only=True, check_schema=False)
    try:
        with store_errors():
            rev = migrate.current(engine)
        head = migrate.head()
        state = "up to date" if rev == head else f"head is {head}"
        click.echo(f"{rev or 'empty (no revision)'} ({state})")
    finally:
        engine.dispose()


@group.command("downgrade")
@click.argument("revision")
@click.option(
    "--destroy-history",
    is_flag=True,
    help="Allow a downgrade that drops the events table while it holds events.",
)
@with_config
def downgrade(cfg: Config, revision: str, destroy_history: bool) -> None:
    """Downgrade the schema to REVISION ('base' removes every table)."""
    engine = open_engine(cfg, read_only=True, check_schema=False)
    try:
        with store_errors():
            try:
                undone = migrate.undoes(engine, revision)
            except AlembicCommandError as exc:
                raise ConfigError("REVISION", str(exc), "see `bfx-recorder db current`") from None
            if migrate.HISTORY_REVISION in undone and not destroy_history:
                held = EventLog(engine).count()
                if held:
                    raise ConfigError(
                        "REVISION",
                        f"downgrading to {revision} drops the events table, which holds "
                        f"{held} events: the whole recorded history",
                        "back the database up; to destroy the history anyway, add "
                        "--destroy-history",
                    )
            migrate.downgrade(engine, revision)
            click.echo(f"database at {migrate.current(engine) or 'base'}")
    finally:
        engine.dispose()
