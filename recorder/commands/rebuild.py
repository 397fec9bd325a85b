"""``bfx-recorder rebuild``: clear and refold projections, with a progress bar."""

from __future__ import annotations

import sys

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

from recorder.commands.common import EXIT_USAGE, fail, open_engine, pick_account, with_config
from recorder.config import Config, ConfigError
from recorder.projections.projector import rebuild, rebuild_work
from recorder.projections.registry import PROJECTION_NAMES
from recorder.store.eventlog import EventLog
from recorder.store.lease import Lease, LeaseHeld, hold_all


@click.command("rebuild")
@click.option("--projection", default=None, help="Only this projection (a table name).")
@click.option("--account", default=None, help="Only this account (default: every account).")
@with_config
def command(cfg: Config, projection: str | None, account: str | None) -> None:
    """Clear projections and refold them from the whole event log."""
    if projection is not None and projection not in PROJECTION_NAMES:
        raise ConfigError(
            "--projection",
            f"unknown projection {projection!r}",
            f"use one of {', '.join(PROJECTION_NAMES)}",
        )
    engine = open_engine(cfg, read_only=False)
    leases: list[Lease] = []
    try:
        known = EventLog(engine).accounts()
        accounts = [pick_account(known, account)] if account else known
        try:
            # A rebuild and a live recorder would write the same rows at once.
            leases = hold_all(engine, accounts)  # type: ignore[arg-type]
        except LeaseHeld as exc:
            fail(f"{exc}; stop it before rebuilding that account", EXIT_USAGE)
        total = rebuild_work(engine, accounts, projection)  # type: ignore[arg-type]
        with Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            disable=not sys.stderr.isatty(),
        ) as progress:
            task = progress.add_task("folding events", total=total)
            folded = rebuild(
                engine,
                accounts,  # type: ignore[arg-type]
                projection,
                lambda n: progress.advance(task, n),
            )
        what = projection or "all projections"
        click.echo(f"rebuilt {what} for {len(accounts)} account(s) from {folded} events")
    finally:
        for lease in leases:
            lease.release()
        engine.dispose()
