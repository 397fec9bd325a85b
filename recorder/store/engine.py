"""Engine factory: SQLite for one writer with concurrent readers, PostgreSQL via psycopg 3."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine

from recorder.config import DatabaseConfig

SQLITE_BUSY_TIMEOUT_MS = 30_000


def create_engine(db: DatabaseConfig, **kwargs: Any) -> Engine:
    """An engine for ``db.url``; SQLite gets WAL, a busy timeout and foreign keys on every
    connection (set in a ``connect`` listener: Python 3.11's sqlite3 has no ``autocommit``)."""
    url = sa.make_url(db.url)
    if url.get_backend_name() == "sqlite":
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
    return sa.create_engine(url, **kwargs)
