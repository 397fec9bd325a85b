"""``bfx-recorder rebuild``: clear and refold projections, with a progress bar."""

from __future__ import annotations

import sys

import click
import sqlalchemy as sa
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

from recorder.config import Config, ConfigError
from recorder.projections.registry import PROJECTION_NAMES, make_folds
from recorder.projections.runner import rebuild
from recorder.runner import prepare_database
from recorder.store.eventlog import accounts as log_accounts
from recorder.store.schema import events


def _work(engine: sa.Engine, accounts: list[str], only: str | None) -> int:
    """Events the rebuild will fold (the kinds its projections read)."""
    kinds = sorted({k for f in make_folds(only) for k in f.kinds})
    with engine.connect() as conn:
        return int(
            conn.execute(
                sa.select(sa.func.count())
                .select_from(events)
                .where(events.c.account.in_(accounts), events.c.kind.in_(kinds))
            ).scalar_one()
        )


def run_rebuild(cfg: Config, projection: str | None, account: str | None) -> int:
    if projection is not None and projection not in PROJECTION_NAMES:
        raise ConfigError(
            "--projection", f"unknown projection {projection!r}", f"use one of {PROJECTION_NAMES}"
        )
    db = prepare_database(cfg)
    try:
        accounts = [account] if account else sorted(log_accounts(db.engine))
        total = _work(db.engine, accounts, projection)
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
