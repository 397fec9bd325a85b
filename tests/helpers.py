"""Test helpers shared by several modules."""

from __future__ import annotations

import queue
import threading
from typing import Any

import sqlalchemy as sa
import trio

from recorder.simulator.server import Simulator


class SimThread:
    """A simulator on its own trio loop in a thread (for asyncio clients and subprocesses)."""

    def __init__(self, **kwargs: Any) -> None:
        self.sim = Simulator(**kwargs)
        self.ports: queue.Queue[int] = queue.Queue()
        self.token: trio.lowlevel.TrioToken | None = None
        self.cancel: trio.CancelScope | None = None
        self.thread = threading.Thread(target=trio.run, args=(self._main,), daemon=True)

    async def _main(self) -> None:
        self.token = trio.lowlevel.current_trio_token()
        with trio.CancelScope() as scope:
            self.cancel = scope
            async with trio.open_nursery() as nursery:
                self.nursery = nursery
                self.ports.put(await nursery.start(self.sim.serve))

    def __enter__(self) -> SimThread:
        self.thread.start()
        self.port = self.ports.get(timeout=10)
        return self

    def call(self, fn: Any, *args: Any) -> Any:
        return trio.from_thread.run_sync(fn, *args, trio_token=self.token)

    def run(self, afn: Any, *args: Any) -> Any:
        return trio.from_thread.run(afn, *args, trio_token=self.token)

    def spawn(self, afn: Any, *args: Any) -> None:
        """Start ``afn(*args)`` as a task on the simulator's loop, without waiting for it."""
        self.call(self.nursery.start_soon, afn, *args)

    def __exit__(self, *exc: object) -> None:
        assert self.cancel is not None
        self.call(self.cancel.cancel)
        self.thread.join(10)


def dump_database(engine: sa.Engine) -> str:
    """Every row of every table, as text (for 'the secret appears nowhere' checks)."""
    out = []
    insp = sa.inspect(engine)
    with engine.connect() as conn:
        for table in insp.get_table_names():
            for row in conn.execute(sa.text(f'SELECT * FROM "{table}"')):
                out.append(f"{table}: {tuple(row)!r}")
    return "\n".join(out)
