"""The ``sessions`` table: one row per upstream connection attempt."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa

from recorder.store.schema import sessions


def open_session(engine: sa.Engine, account: str, url: str, started_at: datetime) -> int:
    with engine.begin() as conn:
        result = conn.execute(
            sessions.insert().values(account=account, url=url, started_at=started_at)
        )
        return int(result.inserted_primary_key[0])  # type: ignore[index]


def update_session(conn: sa.Connection, session_id: int, values: dict[str, Any]) -> None:
    conn.execute(sessions.update().where(sessions.c.id == session_id).values(**values))
