"""The store's exception boundary: callers above never import a driver to catch its errors.

Every call into the database goes through :func:`store_errors` (directly, or through
``Database.run``), which turns whatever the layers below raise into one of two errors:

* :class:`StoreUnavailable`: the database cannot take the work *now* (connection lost or
  refused, server shutting down, locked or busy, disk full, read-only file). Retrying later
  can succeed, so the writer keeps its batch and the projectors wait.
* :class:`StoreError`: retrying the same work will fail the same way (a constraint violated,
  SQL the schema does not accept, a missing table).

Both SQLAlchemy's wrapped errors and the drivers' own (psycopg's on the raw ``COPY`` path,
``sqlite3``'s) are mapped, as httpcore maps socket errors at its boundary.
"""

from __future__ import annotations

import sqlite3
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy.exc


class StoreError(Exception):
    """A database operation failed in a way that retrying the same work will not fix."""


class StoreUnavailable(StoreError):
    """The database cannot be reached or is refusing work right now; retrying later may work."""


# SQLite reports transient conditions and plain SQL errors alike as OperationalError; these
# words (from sqlite3's messages) mark the transient ones.
_SQLITE_TRANSIENT = (
    "locked",
    "busy",
    "unable to open",
    "disk i/o",
    "disk is full",
    "readonly",
    "read-only",
)


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def translate(exc: BaseException) -> StoreError:
    """The store error for ``exc`` (a SQLAlchemy, psycopg or sqlite3 exception)."""
    orig = exc.orig if isinstance(exc, sqlalchemy.exc.DBAPIError) and exc.orig else exc
    if isinstance(exc, sqlalchemy.exc.DBAPIError) and exc.connection_invalidated:
        return StoreUnavailable(f"database unavailable: {_describe(orig)}")
    if isinstance(orig, sqlite3.Error):
        if isinstance(orig, sqlite3.OperationalError) and any(
            word in str(orig).lower() for word in _SQLITE_TRANSIENT
        ):
            return StoreUnavailable(f"database unavailable: {_describe(orig)}")
        return StoreError(f"database error: {_describe(orig)}")
    # psycopg is imported by whoever uses PostgreSQL; a SQLite-only process never pays for it.
    psycopg: Any = sys.modules.get("psycopg")
    if psycopg is not None and isinstance(orig, psycopg.OperationalError | psycopg.InterfaceError):
        # Connection lost or refused, server shutting down (AdminShutdown), ...
        return StoreUnavailable(f"database unavailable: {_describe(orig)}")
    if psycopg is not None and isinstance(
        orig,
        psycopg.errors.InsufficientResources
        | psycopg.errors.LockNotAvailable
        | psycopg.errors.TransactionRollback,
    ):
        # disk full, out of memory or connections; a lock timeout; a deadlock or
        # serialization failure (the transaction was rolled back: running it again can work)
        return StoreUnavailable(f"database unavailable: {_describe(orig)}")
    if isinstance(exc, sqlalchemy.exc.OperationalError | sqlalchemy.exc.InterfaceError):
        return StoreUnavailable(f"database unavailable: {_describe(orig)}")
    if isinstance(exc, sqlalchemy.exc.TimeoutError):  # no connection free in the pool
        return StoreUnavailable(f"database unavailable: {_describe(exc)}")
    return StoreError(f"database error: {_describe(orig)}")


def is_driver_error(exc: BaseException) -> bool:
    """A SQLAlchemy, psycopg or sqlite3 error (psycopg only when it is loaded)."""
    if isinstance(exc, sqlalchemy.exc.SQLAlchemyError | sqlite3.Error):
        return True
    psycopg: Any = sys.modules.get("psycopg")
    return psycopg is not None and isinstance(exc, psycopg.Error)


@contextmanager
def store_errors() -> Iterator[None]:
    """Map every driver error raised inside the block (``raise ... from exc``)."""
    try:
        yield
    except Exception as exc:
        if not is_driver_error(exc):
            raise
        raise translate(exc) from exc
