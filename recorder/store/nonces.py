"""The last auth nonce per API key, keyed by the SHA-256 of the key (never the key itself)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import sqlalchemy as sa

from recorder.store.schema import api_nonces


def key_hash(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()


def last_nonce(engine: sa.Engine, hashed_key: str) -> int:
    with engine.connect() as conn:
        value = conn.execute(
            sa.select(api_nonces.c.last_nonce).where(api_nonces.c.key_hash == hashed_key)
        ).scalar()
    return int(value or 0)


def save_nonce(engine: sa.Engine, hashed_key: str, nonce: int) -> None:
    """Persist ``nonce`` unless a larger one is already stored (another process, a race)."""
    now = datetime.now(UTC)
    with engine.begin() as conn:
        updated = conn.execute(
            api_nonces.update()
            .where(api_nonces.c.key_hash == hashed_key, api_nonces.c.last_nonce < nonce)
            .values(last_nonce=nonce, updated_at=now)
        ).rowcount
        if updated == 0:
            exists = conn.execute(
                sa.select(api_nonces.c.last_nonce).where(api_nonces.c.key_hash == hashed_key)
            ).scalar()
            if exists is None:
                conn.execute(
                    api_nonces.insert().values(
                        key_hash=hashed_key, last_nonce=nonce, updated_at=now
                    )
                )
