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


def account_sessions(engine: sa.Engine, account: str) -> list[sa.Row[Any]]:
    """Every session of ``account``, oldest first."""
    with engine.connect() as conn:
        return list(
            conn.execute(
                sa.select(sessions).where(sessions.c.account == account).order_by(sessions.c.id)
            )
        )


def last_session(conn: sa.Connection, account: str) -> sa.Row[Any] | None:
    return conn.execute(
        sa.select(sessions)
        .where(sessions.c.account == account)
        .order_by(sessions.c.id.desc())
        .limit(1)
    ).first()


def user_ids(engine: sa.Engine, session_ids: list[int]) -> dict[int, int | None]:
    with engine.connect() as conn:
        return {
            int(r.id): r.user_id
            for r in conn.execute(
                sa.select(sessions.c.id, sessions.c.user_id).where(sessions.c.id.in_(session_ids))
            )
        }


def end_reasons(engine: sa.Engine, account: str) -> dict[str | None, int]:
    """How many sessions of ``account`` ended for each reason (None: not ended)."""
    with engine.connect() as conn:
        return {
            reason: int(n)
            for reason, n in conn.execute(
                sa.select(sessions.c.end_reason, sa.func.count())
                .where(sessions.c.account == account)
                .group_by(sessions.c.end_reason)
            ).all()
        }
