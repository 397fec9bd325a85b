"""``bfx-recorder rebuild``: clear and refold projections, with a progress bar."""

from __future__ import annotations

import sys

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

from recorder.config import Config, ConfigError
from recorder.projections.projector import rebuild, rebuild_work
from recorder.projections.registry import PROJECTION_NAMES
from recorder.runner import prepare_database
from recorder.store.eventlog import EventLog


def run_rebuild(cfg: Config, projection: str | None, account: str | None) -> int:
    if projection is not None and projection not in PROJECTION_NAMES:
        raise ConfigError(
            "--projection", f"unknown projection {projection!r}", f"use one of {PROJECTION_NAMES}"
        )
    db = prepare_database(cfg)
    try:
        accounts = [account] if account else EventLog(db.engine).accounts()
        total = rebuild_work(db.engine, accounts, projection)
        with Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            disable=not sys.stderr.isatty(),
            console=None,
        ) as progress:
            task = progress.add_task("folding events", total=total)
            folded = rebuild(db.engine, accounts, projection, lambda n: progress.advance(task, n))
        what = projection or "all projections"
        click.echo(f"rebuilt {what} for {len(accounts)} account(s) from {folded} events")
        return 0
    finally:
        db.engine.dispose()
