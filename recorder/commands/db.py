"""``bfx-recorder db upgrade | current | downgrade``: Alembic migrations, from any directory."""

from __future__ import annotations

import click

from recorder.commands.common import open_engine, with_config
from recorder.config import Config, redact_url
from recorder.store import migrate
from recorder.store.errors import store_errors


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
@with_config
def downgrade(cfg: Config, revision: str) -> None:
    """Downgrade the schema to REVISION ('base' removes every table)."""
    engine = open_engine(cfg, read_only=True, check_schema=False)
    try:
        with store_errors():
            migrate.downgrade(engine, revision)
            click.echo(f"database at {migrate.current(engine) or 'base'}")
    finally:
        engine.dispose()
