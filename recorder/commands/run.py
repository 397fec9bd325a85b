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

import click
import trio

from recorder import logs
from recorder.commands.common import EXIT_FAILURE, EXIT_USAGE, fail, open_engine, with_config
from recorder.config import Config, ConfigError
from recorder.daemon import Recorder
from recorder.logs import log_fields
from recorder.store.database import Database
from recorder.store.errors import StoreUnavailable
from recorder.store.lease import LeaseHeld, hold_all

log = logging.getLogger("recorder.run")

DATABASE_WAIT_LOG_EVERY = 30.0  # seconds between "still waiting for the database" lines
FORCE_AFTER_SIGNALS = 3


async def run_until_signal(recorder: Recorder) -> int:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:

            async def watch() -> None:
                received = 0
                async for signum in signals:
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

            nursery.start_soon(watch)
            code = await recorder.run()
            nursery.cancel_scope.cancel()
    return code


def wait_for_database(cfg: Config) -> Database:
    """The daemon waits for a database that is not there yet (a server still starting, a
    full disk), with back-off and one line per interval; SIGINT/SIGTERM ends the wait."""
    delay, logged_at = 0.5, -DATABASE_WAIT_LOG_EVERY
    while True:
        try:
            return Database(open_engine(cfg, read_only=False))
        except StoreUnavailable as exc:
            now = time.monotonic()
            if now - logged_at >= DATABASE_WAIT_LOG_EVERY:
                logged_at = now
                log_fields(log, "waiting for the database", logging.WARNING, error=str(exc))
            time.sleep(delay)
            delay = min(delay * 2, 10.0)


@click.command("run")
@click.option(
    "--standby",
    is_flag=True,
    help="If another process records an account, wait and take over when it stops.",
)
@with_config
def command(cfg: Config, standby: bool) -> None:
    """Record every configured account until SIGINT/SIGTERM."""
    logs.setup(cfg.logging.format, cfg.logging.level)
    if not cfg.accounts:
        raise ConfigError(
            "accounts", "no [[accounts]] configured", "add an [[accounts]] table (see the example)"
        )
    accounts = [(acc, acc.credentials()) for acc in cfg.accounts]
    for signum in (signal.SIGINT, signal.SIGTERM):  # before trio runs: a plain, quiet exit
        signal.signal(signum, lambda *_: sys.exit(0))
    db = wait_for_database(cfg)
    try:
        leases = hold_all(
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
    # trio restores these when its signal receiver closes and re-delivers signals still
    # pending then (a second SIGTERM during the drain): ignored, they cannot abort the exit.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)
    try:
        code = trio.run(run_until_signal, Recorder(cfg, accounts, db, leases=leases))
    finally:
        for lease in leases:
            lease.release()
        db.engine.dispose()
    sys.exit(code)
