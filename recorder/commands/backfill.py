"""``bfx-recorder backfill``: fetch one window of REST history on demand (reason ``manual``),
for example the account's history before recording began (ledgers reach back six years,
orders history about two weeks). The answers go into the log through a writer and the hash
chain like any frame, then the projections fold them.

It takes the account's lease, so it runs while the daemon for that account is stopped (the
daemon backfills its own gaps).
"""

from __future__ import annotations

import signal
import sys
from datetime import UTC, datetime

import click
import httpx
import trio

from recorder import logs
from recorder.commands.common import (
    EXIT_FAILURE,
    EXIT_USAGE,
    STOP_SIGNALS,
    StartupSignals,
    fail,
    open_engine,
    parse_time,
    with_config,
)
from recorder.config import AccountConfig, Config, ConfigError, Credentials
from recorder.projections.projector import AccountProjector
from recorder.store.database import Database
from recorder.store.lease import LeaseHeld, hold_all
from recorder.upstream.backfill import Backfiller, Window
from recorder.upstream.nonces import PersistentNonces
from recorder.upstream.rest import RestClient
from recorder.writer import Writer


def _account(cfg: Config, name: str | None) -> AccountConfig:
    names = [a.name for a in cfg.accounts]
    if name is None and len(names) == 1:
        return cfg.accounts[0]
    for acc in cfg.accounts:
        if acc.name == name:
            return acc
    raise ConfigError(
        "--account",
        f"no configured account {name!r}" if name else f"{len(names)} accounts are configured",
        f"use one of {', '.join(names)}" if names else "add an [[accounts]] table",
    )


async def fetch(
    cfg: Config,
    acc: AccountConfig,
    creds: Credentials,
    db: Database,
    window: Window,
    stopped_by: list[str],
) -> bool:
    """Fetch ``window`` through a writer of its own, then fold it; a SIGINT/SIGTERM ends the
    window marked incomplete (its name goes into ``stopped_by``). Whether it completed."""
    writer = Writer(db, cfg.writer)
    nonces = PersistentNonces(db, creds.api_key.reveal())
    complete = False
    with trio.open_signal_receiver(*STOP_SIGNALS) as signals:
        async with trio.open_nursery() as nursery, httpx.AsyncClient() as http:
            await nursery.start(writer.run)
            fetching = trio.CancelScope()

            async def watch() -> None:
                async for signum in signals:
                    stopped_by.append(signal.Signals(signum).name)
                    fetching.cancel()  # the window ends marked incomplete

            nursery.start_soon(watch)
            async with writer.send_channel as sink:
                client = RestClient.for_account(acc, creds, nonces, sink.send, http)
                with fetching:
                    complete = await Backfiller(client, sink.send).backfill(window)
            await writer.done.wait()
            nursery.cancel_scope.cancel()
    await db.run(AccountProjector(db.engine, acc.name).catch_up)
    return complete


@click.command("backfill")
@click.option("--account", default=None, help="A configured account (default: the only one).")
@click.option("--from", "start", required=True, help="ISO 8601 time (UTC if no zone).")
@click.option("--to", "end", default=None, help="ISO 8601 time (default: now).")
@with_config
def command(cfg: Config, account: str | None, start: str, end: str | None) -> None:
    """Fetch a window of REST history (orders, trades, ledgers, positions, funding) into the
    log, on demand; exit 1 if it could not be fetched completely."""
    logs.setup(cfg.logging.format, cfg.logging.level)
    acc = _account(cfg, account)
    t0 = parse_time("--from", start)
    t1 = parse_time("--to", end) or datetime.now(UTC)
    assert t0 is not None
    if t0 >= t1:
        raise ConfigError("--from", "the window is empty", "give --from before --to")
    creds = acc.credentials()
    db = Database(open_engine(cfg, read_only=False))
    try:
        leases = hold_all(db.engine, [acc.name])
    except LeaseHeld as exc:
        db.engine.dispose()
        fail(f"{exc}; stop it first (the daemon backfills its own gaps)", EXIT_USAGE)

    stopped_by: list[str] = []
    window = Window(t0, t1, "manual")
    before_trio = StartupSignals(EXIT_FAILURE)  # until trio's receiver: a plain exit
    before_trio.install()
    try:
        with before_trio.guard():
            complete = trio.run(fetch, cfg, acc, creds, db, window, stopped_by)
    finally:
        for lease in leases:
            lease.release()
        db.engine.dispose()
    if stopped_by:
        fail(
            f"{acc.name}: backfill {t0.isoformat()} .. {t1.isoformat()} stopped by "
            f"{stopped_by[0]}: recorded as incomplete; run it again to fetch it whole",
            EXIT_FAILURE,
        )
    click.echo(
        f"{acc.name}: backfill {t0.isoformat()} .. {t1.isoformat()} "
        f"{'complete' if complete else 'INCOMPLETE (see the log; run it again)'}"
    )
    sys.exit(0 if complete else 1)
