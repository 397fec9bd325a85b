"""What every command shares: ``--config``, one way to fail, opening the database.

Failures reach the user the same way from every command: a bad configuration or usage is one
line naming the key and the fix, exit 2 (:class:`~recorder.config.ConfigError`); a database
that cannot be used is one line naming it and the cause, exit 1
(:class:`~recorder.store.errors.StoreError`). Never a traceback, never a secret (the texts are
built from key names, redacted URLs and driver messages only).
"""

from __future__ import annotations

import contextlib
import functools
import signal
import socket
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click
import sqlalchemy as sa

from recorder import config as config_mod
from recorder.config import Config, ConfigError, listen_host
from recorder.groups import leaves
from recorder.store.errors import StoreError, store_errors

F = TypeVar("F", bound=Callable[..., Any])

EXIT_FAILURE = 1
EXIT_USAGE = 2
# What stops a command that runs until told to (run, backfill, serve-replay).
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def fail(message: str, code: int) -> NoReturn:
    click.echo(f"bfx-recorder: {message}", err=True)
    sys.exit(code)


def with_config(func: F) -> F:
    """Add ``--config FILE``, pass the validated :class:`Config` as ``cfg``, and turn the
    two expected failures into one line and an exit code."""

    @click.option(
        "--config",
        "config_path",
        type=click.Path(dir_okay=False),
        default=None,
        help="TOML configuration file (default: $BFX_RECORDER_CONFIG, then config/recorder.toml).",
    )
    @functools.wraps(func)
    def wrapper(*args: Any, config_path: str | None, **kwargs: Any) -> Any:
        cfg: Config | None = None
        try:
            cfg = config_mod.load(config_path)
            for warning in cfg.warnings:
                click.echo(f"bfx-recorder: warning: {warning}", err=True)
            return func(*args, cfg=cfg, **kwargs)
        except ConfigError as exc:
            fail(str(exc), EXIT_USAGE)
        except StoreError as exc:
            where = config_mod.redact_url(cfg.database.url) if cfg else "the database"
            fail(f"database {where}: {exc}", EXIT_FAILURE)

    return wrapper  # type: ignore[return-value]


@contextlib.contextmanager
def listening_on(host: str, port: int) -> Iterator[None]:
    """A server command's one line for an address it cannot listen on (in use, not
    permitted): exit 1 instead of a traceback from inside trio's nurseries."""
    try:
        yield
    except (OSError, BaseExceptionGroup) as exc:
        found = leaves(exc)
        if not found or not all(isinstance(e, OSError) for e in found):
            raise
        first = found[0]
        why = first.strerror if isinstance(first, OSError) and first.strerror else str(first)
        fail(f"cannot listen on {host}:{port}: {why}; fix: choose another --port", EXIT_FAILURE)


def _sqlite_path(url: sa.URL) -> Path | None:
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    return Path(url.database)


def check_sqlite_folder(cfg: Config) -> None:
    """A SQLite path in a folder that does not exist is refused: the folder will not appear
    by itself, so waiting for it would wait forever."""
    path = _sqlite_path(sa.make_url(cfg.database.url))
    if path is not None and not path.parent.is_dir():
        raise ConfigError(
            "database.url",
            f"the folder {path.parent} of the SQLite database {path} does not exist",
            f"create it (mkdir -p {path.parent}) or correct database.url",
        )


def check_listen(cfg: Config) -> None:
    """``[metrics] listen`` must be an address this process can serve: resolvable, this
    machine's, and free. Checked before anything connects (``run``, ``config check``)."""
    listen = cfg.metrics.listen
    if not listen:
        return
    host, port = listen_host(listen), listen.rpartition(":")[2]
    try:
        infos = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
    except OSError as exc:
        raise ConfigError(
            "metrics.listen",
            f"cannot resolve {host!r}: {exc.strerror or exc}",
            'use an address of this machine, e.g. "127.0.0.1:9464"',
        ) from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            raise ConfigError(
                "metrics.listen",
                f"cannot listen on {listen}: {exc.strerror or exc}",
                "choose a free port on an address of this machine",
            ) from None


def open_engine(cfg: Config, *, read_only: bool, check_schema: bool = True) -> sa.Engine:
    """An engine on the configured database.

    ``read_only``: the command only looks. It never creates a database (a missing SQLite file
    is exit 2 naming it) and never migrates: a schema behind the code is exit 2 with the fix.
    Otherwise the schema is brought to head when ``database.auto_migrate`` (else refused the
    same way). Unreachable databases raise :class:`StoreError` (exit 1)."""
    # Here, not at the top: `config check` and `simulate` import this module too and have no
    # use for them (and read-only commands never import alembic).
    from recorder.store import revision
    from recorder.store.engine import create_engine

    url = sa.make_url(cfg.database.url)
    path = _sqlite_path(url)
    check_sqlite_folder(cfg)
    if read_only and path is not None and not path.exists():
        raise ConfigError(
            "database.url",
            f"there is no database at {path}",
            "check database.url (or --config), or record first with `bfx-recorder run`",
        )
    engine = create_engine(cfg.database)
    try:
        with store_errors():
            if not read_only and cfg.database.auto_migrate:
                from recorder.store import migrate

                migrate.upgrade(engine)
            elif check_schema:
                current, head = revision.current(engine), revision.HEAD
                if current != head:
                    fix = (
                        "run `bfx-recorder db upgrade`"
                        if read_only
                        else "run `bfx-recorder db upgrade` or set auto_migrate = true"
                    )
                    raise ConfigError(
                        "database.auto_migrate" if not read_only else "database",
                        f"the schema is at {current or 'nothing'}, the code needs {head}",
                        fix,
                    )
    except BaseException:
        engine.dispose()
        raise
    return engine


def parse_time(option: str, value: str | None) -> datetime | None:
    """ISO 8601; a time without a zone is UTC."""
    if value is None:
        return None
    try:
        t = datetime.fromisoformat(value)
    except ValueError:
        raise ConfigError(
            option, f"{value!r} is not an ISO 8601 time", "write e.g. 2026-11-27T21:00:00Z"
        ) from None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def pick_account(known: list[str], account: str | None, *, required: bool = True) -> str | None:
    """``account`` if the log has it (exit 2 listing the known ones otherwise); without one,
    the only recorded account, or (``required``) exit 2 asking for one."""
    if account:
        if account not in known:
            raise ConfigError(
                "--account",
                f"no events for account {account!r}",
                f"use one of {', '.join(known)}" if known else "record something first",
            )
        return account
    if len(known) == 1 or not required:
        return known[0] if len(known) == 1 else None
    raise ConfigError(
        "--account",
        f"the log has {len(known)} accounts",
        f"choose one with --account ({', '.join(known) or 'none recorded'})",
    )


def account_option(func: F) -> F:
    return click.option("--account", default=None, help="Only this account.")(func)


def time_range_options(func: F) -> F:
    func = click.option("--to", "end", default=None, help="ISO 8601 time (UTC if no zone).")(func)
    return click.option("--from", "start", default=None, help="ISO 8601 time (UTC if no zone).")(
        func
    )


@contextlib.contextmanager
def row_progress(label: str) -> Iterator[Callable[[int], None]]:
    """A spinner counting the rows read or written, on a terminal only (stderr): for the
    commands that stream (report, export). ``tick(n)``: n more rows."""
    if not sys.stderr.isatty():
        yield lambda n: None
        return
    from rich.progress import Progress, SpinnerColumn, TextColumn

    with Progress(
        SpinnerColumn(), TextColumn("{task.description} {task.completed:,} rows"), transient=True
    ) as bar:
        task = bar.add_task(label)
        seen = [0]

        def tick(n: int) -> None:
            seen[0] += n
            if seen[0] % 1000 < n or n >= 1000:  # redrawing per row would cost more than it
                bar.update(task, completed=seen[0])

        yield tick


class StartupSignals:
    """Before trio runs, a SIGINT/SIGTERM ends the start-up with a plain, quiet exit with
    status ``code`` (``run``: 0; ``backfill``: 1, its window not fetched).

    The handler raises ``SystemExit``, which is what interrupts a blocking call (a connect
    to a database that never answers). It also notes the signal, because Python does not
    always let that exception through: raised while an import runs a class body's
    ``__set_name__`` (SQLAlchemy's PostgreSQL dialect is imported by the first connect),
    Python 3.11 turns it into a ``RuntimeError``; raised in a finalizer, it is printed and
    dropped. :meth:`guard` turns whatever ends its block after a signal into the exit."""

    def __init__(self, code: int) -> None:
        self.code = code
        self.received: list[int] = []

    def __call__(self, signum: int, _frame: object) -> None:
        self.received.append(signum)
        raise SystemExit(self.code)

    def install(self) -> None:
        for signum in STOP_SIGNALS:
            signal.signal(signum, self)

    def stopping(self) -> bool:
        return bool(self.received)

    @contextlib.contextmanager
    def guard(self) -> Iterator[None]:
        """Run the start-up's steps; after a signal, leave with ``SystemExit(code)``
        whatever happened (an exception the signal caused, or one that was swallowed)."""
        try:
            yield
        except BaseException:
            if self.received:
                raise SystemExit(self.code) from None
            raise
        if self.received:
            raise SystemExit(self.code)
