"""Synchronous SQLAlchemy work, run from trio in worker threads.

Each :class:`Database` owns an engine and a :class:`trio.CapacityLimiter` no larger than the
connection pool, so trio never has more threads waiting on the database than there are
connections. Driver errors are turned into :mod:`recorder.store.errors` at this boundary.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import sqlalchemy as sa
import sqlalchemy.exc
import trio

from recorder.store.errors import translate

T = TypeVar("T")


class Database:
    def __init__(self, engine: sa.Engine, threads: int = 4) -> None:
        self.engine = engine
        self.limiter = trio.CapacityLimiter(threads)

    @property
    def is_postgres(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    async def run(
        self, fn: Callable[..., T], *args: Any, limiter: trio.CapacityLimiter | None = None
    ) -> T:
        """Run ``fn(*args)`` in a worker thread; driver errors become store errors."""
        try:
            return await trio.to_thread.run_sync(fn, *args, limiter=limiter or self.limiter)
        except sqlalchemy.exc.SQLAlchemyError as exc:
            raise translate(exc) from exc
