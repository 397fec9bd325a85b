"""``bfx-recorder run``: migrate if configured, record every account until SIGINT/SIGTERM."""

from __future__ import annotations

import signal

import trio

from recorder import logs
from recorder.config import Config, ConfigError
from recorder.daemon import Recorder
from recorder.store import migrate
from recorder.store.database import Database
from recorder.store.engine import create_engine


def prepare_database(cfg: Config) -> Database:
    """An engine on the configured database, at the schema head (or a ConfigError)."""
    engine = create_engine(cfg.database)
    if cfg.database.auto_migrate:
        migrate.upgrade(engine)
    else:
        current, head = migrate.current(engine), migrate.head()
        if current != head:
            engine.dispose()
            raise ConfigError(
                "database.auto_migrate",
                f"the schema is at {current or 'nothing'}, the code needs {head}",
                "run `bfx-recorder db upgrade` or set auto_migrate = true",
            )
    return Database(engine)


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


def run(cfg: Config) -> int:
    logs.setup(cfg.logging.format, cfg.logging.level)
    if not cfg.accounts:
        raise ConfigError(
            "accounts", "no [[accounts]] configured", "add an [[accounts]] table (see the example)"
        )
    accounts = [(acc, acc.credentials()) for acc in cfg.accounts]
    db = prepare_database(cfg)
    try:
        return trio.run(run_until_signal, Recorder(cfg, accounts, db))
    finally:
        db.engine.dispose()
