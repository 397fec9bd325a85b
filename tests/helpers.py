"""Test helpers shared by several modules."""

from __future__ import annotations

import queue
import socket
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
import trio

from recorder import health
from recorder.simulator.server import Simulator
from recorder.store.schema import events

if TYPE_CHECKING:
    from recorder.daemon import Recorder


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


def closed_port() -> int:
    """A loopback port nothing listens on (bound once, then closed): a REST host that
    cannot be reached."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# The crash, fault and metrics tests run with the backfill off and with it on against a REST
# host that cannot be reached: the socket's frames must not depend on REST.
REST_CASES = ["rest-off", "rest-unreachable"]


def rest_port_for(case: str) -> int | None:
    return closed_port() if case == "rest-unreachable" else None


def dump_database(engine: sa.Engine) -> str:
    """Every row of every table, as text (for 'the secret appears nowhere' checks)."""
    out = []
    insp = sa.inspect(engine)
    with engine.connect() as conn:
        for table in insp.get_table_names():
            for row in conn.execute(sa.text(f'SELECT * FROM "{table}"')):
                out.append(f"{table}: {tuple(row)!r}")
    return "\n".join(out)


# --- waiting on conditions, not on time -----------------------------------------------------
# Each helper waits for a state the test needs (a bounded wait: a timeout is a failure), so
# no test passes or fails by timing luck.


async def wait_until(
    condition: Callable[[], bool], what: str = "condition", timeout: float = 20.0
) -> None:
    """Wait until ``condition()`` holds, looking again after each short pause."""
    with trio.fail_after(timeout):
        while not condition():
            await trio.sleep(0.01)


async def progressed(recorder: Recorder, events_: int = 20) -> None:
    """Wait until the writer has committed ``events_`` more events than now: frames are
    flowing through the current session."""
    target = recorder.writer.stats.committed_events + events_
    await wait_until(lambda: recorder.writer.stats.committed_events >= target, "progress")


def recorded_on_last_session(engine: sa.Engine, account: str | None = None) -> int:
    """Frames recorded on the newest session (of ``account``, if given)."""
    newest = sa.select(sa.func.max(events.c.session_id))
    mine = [events.c.account == account] if account is not None else []
    with engine.connect() as conn:
        return int(
            conn.execute(
                sa.select(sa.func.count())
                .select_from(events)
                .where(
                    *mine,
                    events.c.session_id == newest.where(*mine).scalar_subquery(),
                    events.c.kind.not_like("recorder.%"),
                    events.c.kind.not_like("rest.%"),  # REST answers: not from the socket
                )
            ).scalar_one()
        )


async def settle(recorder: Recorder, account: str = "main") -> None:
    """Wait until every projector of ``account`` has folded everything committed so far."""

    await wait_until(lambda: health.caught_up(recorder, account), "projectors caught up")


async def drain(sim: Simulator, recorder: Recorder, engine: sa.Engine) -> None:
    """With the simulator paused: wait until the current session has recorded every frame the
    simulator sent on it, then until the projections have folded them."""
    await sim.settled()  # a step that began before the pause has sent everything
    await wait_until(
        lambda: recorded_on_last_session(engine) == len(sim.frames_for(sim.connection_count)),
        "the last session recorded everything sent",
    )
    await settle(recorder)


async def quiesce(sim: Simulator, recorder: Recorder, engine: sa.Engine) -> None:
    """Stop the simulated account (no activity, no heartbeats), then :func:`drain`."""
    sim.pause()
    sim.heartbeat_period = 1e9
    await drain(sim, recorder, engine)


async def reauth(sim: Simulator, fault: str, arg: float | None = None) -> None:
    """Inject ``fault`` and wait until a client has authenticated again."""
    auth = sim.auth_events
    await sim.inject(fault, arg)
    with trio.fail_after(20):
        await auth.wait()
