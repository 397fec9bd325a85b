"""The store's exception boundary: callers above never import SQLAlchemy to catch its errors."""

from __future__ import annotations

import sqlalchemy.exc


class StoreError(Exception):
    """A database operation failed in a way retrying will not fix."""


class StoreUnavailable(StoreError):
    """The database cannot be reached or is refusing work right now; retrying later may work."""


RETRYABLE = (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError)


# SQLite reports both "busy" and plain SQL errors as OperationalError: only these are transient.
_SQLITE_TRANSIENT = ("locked", "busy", "unable to open", "disk i/o")


def translate(exc: BaseException) -> StoreError:
    orig = getattr(exc, "orig", None)
    if type(orig).__module__ == "sqlite3" and not any(
        word in str(orig).lower() for word in _SQLITE_TRANSIENT
    ):
        return StoreError(f"database error: {orig}")
    if isinstance(exc, RETRYABLE):
        return StoreUnavailable(f"database unavailable: {type(exc.orig).__name__}")
    return StoreError(f"database error: {type(exc).__name__}")
