"""Nonces that survive restarts: the last one used is persisted before the auth frame is sent."""

from __future__ import annotations

import time
from collections.abc import Callable

import trio

from recorder.protocol import NonceSource
from recorder.store import nonces
from recorder.store.database import Database


class PersistentNonces:
    """One per API key: loads the last nonce from the database once, then for each auth takes
    the next one and commits it before returning it."""

    def __init__(self, db: Database, api_key: str, clock: Callable[[], float] = time.time):
        self.db = db
        self.key_hash = nonces.key_hash(api_key)
        self.source: NonceSource | None = None
        self.clock = clock
        self._lock = trio.Lock()
        # Held by whoever takes a nonce and sends it (WebSocket auth, REST), so requests of
        # this key reach the exchange in nonce order: one in flight at a time.
        self.key_lock = trio.Lock()

    async def next(self) -> int:
        async with self._lock:
            if self.source is None:
                last = await self.db.run(nonces.last_nonce, self.db.engine, self.key_hash)
                self.source = NonceSource(clock=self.clock, last_used=last)
            nonce = self.source.next()
            await self.db.run(nonces.save_nonce, self.db.engine, self.key_hash, nonce)
            return nonce
