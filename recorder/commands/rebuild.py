"""``bfx-recorder rebuild``: clear and refold projections, with a progress bar."""

from __future__ import annotations

import signal
import sys
from types import FrameType

import click
import sqlalchemy as sa
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

from recorder.causes import behind
from recorder.commands.common import (
    EXIT_FAILURE,
    EXIT_USAGE,
    fail,
    open_engine,
    pick_account,
    with_config,
)
from recorder.config import Config, ConfigError
from recorder.projections.rebuild import rebuild, rebuild_plan, rebuild_work
from recorder.projections.registry import PROJECTION_NAMES
from recorder.store.eventlog import EventLog
from recorder.store.lease import Lease, LeaseHeld, hold_all
from recorder.store.schema import projector_checkpoints


class Interrupted(Exception):
    """SIGINT/SIGTERM during the fold: the batch in flight rolls back, the committed ones
    (rows and checkpoints together) stay."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.name = signal.Signals(signum).name


class _Interrupt:
    """The SIGINT/SIGTERM handler during the fold: raises :class:`Interrupted`, and keeps
    it, because Python does not always let that exception through as it is: raised while an
    import runs a class body's ``__set_name__``, Python 3.11 turns it into a
    ``RuntimeError`` caused by it. :meth:`ended` tells such an exception from an unrelated
    failure (one after a signal that a library swallowed stays what it is)."""

    def __init__(self) -> None:
        self.received: Interrupted | None = None

    def __call__(self, signum: int, _frame: FrameType | None) -> None:
        self.received = Interrupted(signum)
        raise self.received

    def ended(self, exc: BaseException) -> Interrupted | None:
        """The interruption, if ``exc`` is it or came from it (its causes and contexts)."""
        stop = self.received
        if stop is None or not any(e is stop for e in behind(exc)):
            return None
        return stop


def checkpoints(engine: sa.Engine, accounts: list[str], projection: str | None) -> dict[str, int]:
    """Each account's lowest checkpoint among the projections rebuilt."""
    c = projector_checkpoints.c
    query = sa.select(c.account, sa.func.min(c.event_id)).where(c.account.in_(accounts))
    if projection is not None:
        query = query.where(c.projector == projection)
    with engine.connect() as conn:
        return {acc: int(pos) for acc, pos in conn.execute(query.group_by(c.account))}


@click.command("rebuild")
@click.option("--projection", default=None, help="Only this projection (a table name).")
@click.option("--account", default=None, help="Only this account (default: every account).")
@click.option(
    "--jobs",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="Fold in this many worker processes (accounts spread over them; one account's "
    "projections shared out when there are fewer accounts than twice the jobs).",
)
@with_config
def command(cfg: Config, projection: str | None, account: str | None, jobs: int) -> None:
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
        # (with jobs, the plan's count of what each worker reads: counted once, used twice)
        work = rebuild_plan(engine, accounts, projection, jobs) if jobs > 1 else None  # type: ignore[arg-type]
        total = work.reads if work else rebuild_work(engine, accounts, projection)  # type: ignore[arg-type]
        done = [0]
        interrupt = _Interrupt()
        previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            with Progress(
                "[progress.description]{task.description}",
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                disable=not sys.stderr.isatty(),
            ) as progress:
                task = progress.add_task("folding events", total=total)

                def advance(n: int) -> None:
                    done[0] += n
                    progress.advance(task, n)

                folded = rebuild(
                    engine,
                    accounts,  # type: ignore[arg-type]
                    projection,
                    advance,
                    jobs=jobs,
                    db=cfg.database,
                    work=work,
                )
        except BaseException as exc:
            stop = interrupt.ended(exc)
            if stop is None:
                raise
            for sig in previous:  # a second signal must not cut the report short
                signal.signal(sig, signal.SIG_IGN)
            where = ", ".join(
                f"{acc} at event {pos}"
                for acc, pos in checkpoints(engine, accounts, projection).items()  # type: ignore[arg-type]
            )
            fail(
                f"rebuild stopped by {stop.name} after {done[0]} of {total} events; the "
                f"projections hold the log up to their checkpoints ({where or 'none yet'}); "
                "`bfx-recorder run` folds on from there, `bfx-recorder rebuild` starts over",
                EXIT_FAILURE,
            )
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        what = projection or "all projections"
        by = f" in {jobs} processes" if jobs > 1 else ""
        click.echo(f"rebuilt {what} for {len(accounts)} account(s) from {folded} events{by}")
    finally:
        for lease in leases:
            lease.release()
        engine.dispose()
