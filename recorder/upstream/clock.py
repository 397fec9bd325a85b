"""The wall clock watched against the monotonic one: a step (NTP correcting a clock that ran
ahead, an operator setting it) is found, marked in the log and allowed for.

Durations and deadlines already use trio's monotonic clock; only times that must be the
exchange's (``received_at``, a backfill window's bounds) come from the wall clock. A window
whose gap spans a step is widened by the step, so that it still covers the gap in the
exchange's time (stepped back 600 s, a reconnect's window ended 10 minutes early and missed
the gap's trades).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import trio

STEP_BOUND = 2.0  # seconds of disagreement between the two clocks that count as a step
LOOK_EVERY = 1.0  # seconds between looks
STEPS_KEPT = 1000


@dataclass(frozen=True)
class Step:
    at: float  # trio (monotonic) time it was found
    seconds: float  # how far the wall clock moved beyond the monotonic one (< 0: back)
    wall_before: float
    wall_after: float


class ClockWatch:
    def __init__(
        self,
        wall: Callable[[], float] = time.time,
        bound: float = STEP_BOUND,
        every: float = LOOK_EVERY,
    ) -> None:
        self.wall = wall
        self.bound = bound
        self.every = every
        self.steps: list[Step] = []
        self.found = 0  # steps found in all (``steps`` keeps the latest)
        self.changed = trio.Event()
        self._mono: float | None = None
        self._wall = 0.0

    def check(self) -> Step | None:
        """Compare the clocks now; a step beyond the bound is recorded and returned."""
        mono, wall = trio.current_time(), self.wall()
        step = None
        if self._mono is not None:
            moved = (wall - self._wall) - (mono - self._mono)
            if abs(moved) > self.bound:
                step = Step(mono, moved, self._wall, wall)
                self.steps.append(step)
                del self.steps[:-STEPS_KEPT]
                self.found += 1
                self.changed.set()
                self.changed = trio.Event()
        self._mono, self._wall = mono, wall
        return step

    def stepped_since(self, mono: float) -> float:
        """How far the wall clock stepped (either way, in all) since trio time ``mono``."""
        self.check()
        return sum(abs(s.seconds) for s in self.steps if s.at >= mono)

    async def run(self) -> None:
        self.check()
        while True:
            await trio.sleep(self.every)
            self.check()
