"""``bfx-recorder run``: wait for the database, take each account's lease, record every
account until SIGINT/SIGTERM.

Signals: the first SIGINT/SIGTERM stops reading and drains (everything read is committed,
sessions end with ``shutdown``, exit 0); a second one during the drain is noted and ignored
(``timeout`` and service managers often send two); a third forces an exit with code 1.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from collections.abc import Callable

import click
import trio

from recorder import logs
from recorder.commands.common import (
    EXIT_FAILURE,
    EXIT_USAGE,
    STOP_SIGNALS,
    StartupSignals,
    check_listen,
    fail,
    open_engine,
    with_config,
)
from recorder.config import AccountConfig, Config, ConfigError, Credentials, redact_url
from recorder.daemon import LEASE_CHECK_EVERY, LEASES_PER_ROUND, Recorder
from recorder.logs import log_fields
from recorder.store.database import Database
from recorder.store.errors import StoreUnavailable
from recorder.store.lease import Lease, LeaseHeld, hold_all, take_up_to

log = logging.getLogger("recorder.run")

DATABASE_WAIT_LOG_EVERY = 30.0  # seconds between "still waiting for the database" lines
FORCE_AFTER_SIGNALS = 3


class EarlySignals:
    """Signals that arrive after the start-up's plain exit is switched off and before trio's
    receiver takes over (and those trio re-delivers when its receiver closes): noted here,
    handed to the receiver, so none is lost and none can abort the drain."""

    def __init__(self) -> None:
        self.pending: list[int] = []

    def __call__(self, signum: int, _frame: object) -> None:
        self.pending.append(signum)

    def install(self) -> None:
        for signum in STOP_SIGNALS:
            signal.signal(signum, self)


async def run_until_signal(recorder: Recorder, early: EarlySignals | None = None) -> int:
    with trio.open_signal_receiver(*STOP_SIGNALS) as signals:
        async with trio.open_nursery() as nursery:
            received = 0

            def on_signal(signum: int) -> None:
                nonlocal received
                received += 1
                name = signal.Signals(signum).name
                if received == 1:
                    log_fields(log, "stopping: draining what was read", signal=name)
                    recorder.stop()
                elif received < FORCE_AFTER_SIGNALS:
                    log_fields(
                        log,
                        "already stopping; the drain goes on (one more signal forces exit)",
                        logging.WARNING,
                        signal=name,
                    )
                else:
                    click.echo("bfx-recorder: forced exit before the drain finished", err=True)
                    os._exit(EXIT_FAILURE)

            async def watch() -> None:
                async for signum in signals:
                    on_signal(signum)

            if early is not None:
                while early.pending:
                    on_signal(early.pending.pop(0))
            nursery.start_soon(watch)
            code = await recorder.run()
            nursery.cancel_scope.cancel()
    return code


def wait_for_database(cfg: Config, stopping: Callable[[], bool] = lambda: False) -> Database:
    """The daemon waits for a database that is not there yet (a server still starting, a
    full disk), with back-off and one line per interval; SIGINT/SIGTERM ends the wait
    (``stopping``: a signal came, in case its exception was swallowed)."""
    delay, logged_at = 0.5, -DATABASE_WAIT_LOG_EVERY
    log_fields(log, "opening the database", url=redact_url(cfg.database.url))
    while not stopping():
        try:
            return Database(open_engine(cfg, read_only=False))
        except StoreUnavailable as exc:
            now = time.monotonic()
            if now - logged_at >= DATABASE_WAIT_LOG_EVERY:
                logged_at = now
                log_fields(
                    log,
                    "waiting for the database",
                    logging.WARNING,
                    url=redact_url(cfg.database.url),
                    error=str(exc),
                )
            time.sleep(delay)
            delay = min(delay * 2, 10.0)
    raise SystemExit(0)


@click.command("run")
@click.option(
    "--standby",
    is_flag=True,
    help="If another process records an account, wait and take over when it stops.",
)
@click.option(
    "--max-accounts",
    type=click.IntRange(min=1),
    default=None,
    help="Record at most N of the configured accounts (those whose lease is free); the others "
    "wait as with --standby and are taken over when a process recording them stops. Several "
    "processes, on several hosts, can share one configuration and one PostgreSQL database.",
)
@with_config
def command(cfg: Config, standby: bool, max_accounts: int | None) -> None:
    """Record every configured account until SIGINT/SIGTERM."""
    logs.setup(cfg.logging.format, cfg.logging.level)
    if not cfg.accounts:
        raise ConfigError(
            "accounts", "no [[accounts]] configured", "add an [[accounts]] table (see the example)"
        )
    accounts = [(acc, acc.credentials()) for acc in cfg.accounts]
    # Trouble that can be found before anything connects is one line and exit 2 (a missing
    # SQLite folder: open_engine, below).
    check_listen(cfg)
    startup = StartupSignals(0)  # before trio runs: a plain, quiet exit
    startup.install()
    with startup.guard():
        db = wait_for_database(cfg, startup.stopping)
        leases, accounts, waiting = _take_leases(db, accounts, standby, max_accounts)
    # From here a signal is noted, not an exit: one before trio's receiver is up stops the
    # recorder as soon as it is; those trio re-delivers when its receiver closes (a second
    # SIGTERM during the drain) are noted too, and cannot abort the exit.
    early = EarlySignals()
    early.install()
    recorder = Recorder(
        cfg, accounts, db, leases=leases, waiting=waiting, max_accounts=max_accounts
    )
    try:
        code = trio.run(run_until_signal, recorder, early)
    finally:
        for lease in leases:  # (the recorder releases those it took over itself)
            lease.release()
        db.engine.dispose()
    sys.exit(code)


def _take_leases(
    db: Database,
    accounts: list[tuple[AccountConfig, Credentials]],
    standby: bool,
    max_accounts: int | None,
) -> tuple[
    list[Lease],
    list[tuple[AccountConfig, Credentials]],
    list[tuple[AccountConfig, Credentials, Lease]],
]:
    """The leases this process starts with, the accounts it records, and (with
    ``--max-accounts``) the accounts that wait for theirs."""
    if max_accounts is None:
        return hold_or_fail(db, accounts, standby), accounts, []
    by_name = {acc.name: (acc, creds) for acc, creds in accounts}
    first = min(max_accounts, LEASES_PER_ROUND)  # the rest at the lease checks
    leases, others = take_up_to(db.engine, list(by_name), first)
    waiting = [(*by_name[lease.account], lease) for lease in others]
    log_fields(
        log,
        f"recording {len(leases)} of {len(by_name)} accounts (--max-accounts {max_accounts});"
        f" up to {LEASES_PER_ROUND} more every {LEASE_CHECK_EVERY:g} s while leases are free",
        accounts=",".join(lease.account for lease in leases) or "-",
        waiting=len(waiting),
    )
    return leases, [by_name[lease.account] for lease in leases], waiting


def hold_or_fail(
    db: Database, accounts: list[tuple[AccountConfig, Credentials]], standby: bool
) -> list[Lease]:
    """Every account's lease (waiting for each with ``standby``), or exit 2 naming the
    process that holds one."""
    try:
        return hold_all(
            db.engine,
            [acc.name for acc, _ in accounts],
            standby=standby,
            on_wait=lambda held: log_fields(
                log, f"standing by: {held}; taking over when it stops", account=held.account
            ),
        )
    except LeaseHeld as exc:
        db.engine.dispose()
        fail(f"{exc}; stop it first, or start this one with --standby", EXIT_USAGE)
