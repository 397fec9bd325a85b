"""Auth nonces: microseconds, strictly increasing, never above 2**53 - 1.

Bitfinex tracks the last nonce per API key and rejects anything not above it (10114
"nonce: small"). A wall clock can step back (NTP, VM migration), so the source never returns
less than ``last + 1``; the caller persists :attr:`NonceSource.last` before it sends the auth
frame and seeds a new source with it after a restart.
"""

from __future__ import annotations

import time
from collections.abc import Callable

MAX_NONCE = 2**53 - 1  # JavaScript's MAX_SAFE_INTEGER, the exchange's cap


class NonceExhausted(Exception):
    """The nonce would exceed the exchange's cap: the API key can no longer authenticate."""


class NonceSource:
    def __init__(self, clock: Callable[[], float] = time.time, last_used: int = 0) -> None:
        self._clock = clock
        self._last = last_used

    @property
    def last(self) -> int:
        return self._last

    def observe(self, used: int) -> None:
        """Raise the floor to a nonce known to be used elsewhere (e.g. read from the database)."""
        self._last = max(self._last, used)

    def next(self) -> int:
        nonce = max(int(self._clock() * 1_000_000), self._last + 1)
        if nonce > MAX_NONCE:
            raise NonceExhausted(f"next nonce {nonce} exceeds {MAX_NONCE}; use a new API key")
        self._last = nonce
        return nonce
