"""Synchronous SQLAlchemy work, run from trio in worker threads.

Each :class:`Database` owns an engine and a :class:`trio.CapacityLimiter` that bounds how
many worker threads wait on the database at once (callers that must be serialized, like the
writer, pass a limiter of their own). Driver errors become :mod:`recorder.store.errors` at
this boundary.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import sqlalchemy as sa
import trio

from recorder.store.errors import store_errors

T = TypeVar("T")


class Database:
    def __init__(self, engine: sa.Engine, threads: int = 4) -> None:
        self.engine = engine
        self.limiter = trio.CapacityLimiter(threads)

    async def run(
        self, fn: Callable[..., T], *args: Any, limiter: trio.CapacityLimiter | None = None
    ) -> T:
        """Run ``fn(*args)`` in a worker thread; driver errors become store errors."""
        with store_errors():
            return await trio.to_thread.run_sync(fn, *args, limiter=limiter or self.limiter)
