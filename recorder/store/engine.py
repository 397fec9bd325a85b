"""Engine factory: SQLite for one writer with concurrent readers, PostgreSQL via psycopg 3."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine

from recorder.config import DatabaseConfig

SQLITE_BUSY_TIMEOUT_MS = 30_000
PG_CONNECT_TIMEOUT_S = 10


def create_engine(db: DatabaseConfig, **kwargs: Any) -> Engine:
    """An engine for ``db.url``; SQLite gets WAL, a busy timeout and foreign keys on every
    connection (set in a ``connect`` listener: Python 3.11's sqlite3 has no ``autocommit``)."""
    url = sa.make_url(db.url)
    if url.get_backend_name() == "sqlite":
        _create_private(url.database)
        engine = sa.create_engine(
            url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}, **kwargs
        )
        synchronous = db.sqlite_synchronous

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            mode = cur.fetchone()[0]
            cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            cur.execute(f"PRAGMA synchronous={synchronous}")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()
            if url.database not in (None, "", ":memory:") and mode.lower() != "wal":
                raise RuntimeError(f"SQLite refused WAL mode (journal_mode={mode})")

        return engine
    kwargs.setdefault("pool_pre_ping", True)
    if "connect_timeout" not in url.query:
        # A server that accepts and never answers fails a connection attempt after this
        # long, so that waiting for the database can say what it waits for.
        kwargs.setdefault("connect_args", {"connect_timeout": PG_CONNECT_TIMEOUT_S})
    return sa.create_engine(url, **kwargs)


def _create_private(database: str | None) -> None:
    """Create a new SQLite database file readable by its owner only (0600, whatever the
    umask): the log holds the account's whole history. SQLite gives its -wal and -shm files
    the database file's mode. An existing file is left as it is; a missing folder too (the
    commands refuse it with the fix)."""
    if database in (None, "", ":memory:") or database.startswith("file:"):
        return
    path = Path(database)
    if path.exists() or not path.parent.is_dir():
        return
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
