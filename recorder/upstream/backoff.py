"""Reconnect pacing: exponential back-off with full jitter, and the exchange's connection limit.

Both read time from trio, so tests drive them with ``trio.testing.MockClock``.
"""

from __future__ import annotations

import random

import trio

from recorder.protocol.exchange import ConnectionWindow


class Backoff:
    """``uniform(0, min(cap, base * 2**attempt))``: full jitter (spreads reconnect storms)."""

    def __init__(self, base: float = 1.0, cap: float = 60.0, rng: random.Random | None = None):
        self.base = base
        self.cap = cap
        self.attempt = 0
        self.rng = rng or random.Random()

    def next(self) -> float:
        ceiling = min(self.cap, self.base * 2**self.attempt)
        self.attempt += 1
        return self.rng.uniform(0, ceiling)

    def reset(self) -> None:
        self.attempt = 0


class ConnectionRateLimit:
    """At most ``count`` connection attempts in any ``window`` seconds (Bitfinex: 5 per 15 s
    on the authenticated host). Shared by every account that dials the same host."""

    def __init__(self, count: int = 5, window: float = 15.0) -> None:
        self.window = window
        self._rule = ConnectionWindow(count, window)
        self._lock = trio.Lock()

    async def acquire(self) -> None:
        async with self._lock:
            while not self._rule.admit(trio.current_time()):
                await trio.sleep_until(self._rule.next_admission())
