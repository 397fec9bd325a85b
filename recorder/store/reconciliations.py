"""Reconciliation rows as the daemon asks for them: what a reconnect's snapshots no longer
list and no REST answer explains yet."""

from __future__ import annotations

import sqlalchemy as sa

from recorder.store.errors import store_errors
from recorder.store.schema import reconciliations


def unexplained_vanished(engine: sa.Engine, account: str) -> dict[str, list[str]]:
    """Keys of orders and positions that a snapshot no longer listed ('unexpected') and that
    no REST answer explains yet, per projection."""
    rec = reconciliations.c
    with store_errors(), engine.connect() as conn:
        found = conn.execute(
            sa.select(rec.projection, rec.key).where(
                rec.account == account,
                rec.projection.in_(["orders", "positions"]),
                rec.problem == "unexpected",
                rec.explained_by.is_(None),
            )
        ).all()
    out: dict[str, list[str]] = {"orders": [], "positions": []}
    for projection, key in found:
        out[projection].append(key)
    return out
