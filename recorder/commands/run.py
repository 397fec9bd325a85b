"""``bfx-recorder run``: migrate if configured, record every account until SIGINT/SIGTERM."""

from __future__ import annotations

import signal
import sys

import click
import trio

from recorder import logs
from recorder.commands.common import open_engine, with_config
from recorder.config import Config, ConfigError
from recorder.daemon import Recorder
from recorder.store.database import Database


async def run_until_signal(recorder: Recorder) -> int:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:

            async def watch() -> None:
                async for _ in signals:
                    recorder.stop()
                    return

            nursery.start_soon(watch)
            code = await recorder.run()
            nursery.cancel_scope.cancel()
    return code


@click.command("run")
@with_config
def command(cfg: Config) -> None:
    """Record every configured account until SIGINT/SIGTERM."""
    logs.setup(cfg.logging.format, cfg.logging.level)
    if not cfg.accounts:
        raise ConfigError(
            "accounts", "no [[accounts]] configured", "add an [[accounts]] table (see the example)"
        )
    accounts = [(acc, acc.credentials()) for acc in cfg.accounts]
    engine = open_engine(cfg, read_only=False)
    try:
        code = trio.run(run_until_signal, Recorder(cfg, accounts, Database(engine)))
    finally:
        engine.dispose()
    sys.exit(code)
