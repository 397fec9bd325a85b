"""``bfx-recorder status``: per account, is it recording, how fresh, how far behind."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

import sqlalchemy as sa

from recorder.config import StatusConfig
from recorder.store.schema import events, projector_checkpoints, sessions


@dataclass
class AccountState:
    account: str
    connected: bool
    last_session_end: str | None
    last_frame_at: datetime | None
    last_frame_age_s: float | None
    events: int
    last_event_id: int
    projector_lag: dict[str, int] = field(default_factory=dict)
    stale: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def account_status(
    engine: sa.Engine, cfg: StatusConfig, accounts: list[str], now: datetime | None = None
) -> list[AccountState]:
    now = now or datetime.now(UTC)
    out = []
    with engine.connect() as conn:
        known = set(conn.execute(sa.select(events.c.account).distinct()).scalars())
        for acc in sorted(set(accounts) | known):
            last = conn.execute(
                sa.select(sessions).where(sessions.c.account == acc).order_by(sessions.c.id.desc())
            ).first()
            count, top, last_at = conn.execute(
                sa.select(
                    sa.func.count(), sa.func.max(events.c.id), sa.func.max(events.c.received_at)
                ).where(events.c.account == acc)
            ).one()
            if isinstance(last_at, str):  # aggregate results skip the column type on SQLite
                last_at = datetime.fromisoformat(last_at).replace(tzinfo=UTC)
            age = (now - last_at).total_seconds() if last_at else None
            state = AccountState(
                account=acc,
                connected=bool(last is not None and last.connected_at and last.ended_at is None),
                last_session_end=last.end_reason if last is not None else None,
                last_frame_at=last_at,
                last_frame_age_s=age,
                events=int(count),
                last_event_id=int(top or 0),
            )
            for cp in conn.execute(
                sa.select(projector_checkpoints).where(projector_checkpoints.c.account == acc)
            ):
                state.projector_lag[cp.projector] = state.last_event_id - int(cp.event_id)
                if cp.stale:
                    state.stale.append(cp.projector)
            if age is None or age > cfg.max_frame_age_s:
                state.problems.append(
                    f"last frame {'never' if age is None else f'{age:.0f}s ago'} "
                    f"(bound {cfg.max_frame_age_s:.0f}s)"
                )
            lagging = {
                p: lag for p, lag in state.projector_lag.items() if lag > cfg.max_projector_lag
            }
            if lagging:
                state.problems.append(f"projectors behind: {lagging}")
            out.append(state)
    return out
