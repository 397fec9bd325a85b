"""``bfx-recorder status``: per account, is it recording, how fresh, how far behind."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

import sqlalchemy as sa

from recorder.config import StatusConfig
from recorder.health import lag
from recorder.store.eventlog import EventLog
from recorder.store.schema import fold_findings, projector_checkpoints
from recorder.store.sessions import last_session


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
    # Rows a projection could not hold, per projection (fold_findings): data the exchange
    # sent that no table can keep; reported, not a problem of the recorder's health.
    findings: dict[str, int] = field(default_factory=dict)


def account_status(
    engine: sa.Engine, cfg: StatusConfig, accounts: list[str], now: datetime | None = None
) -> list[AccountState]:
    now = now or datetime.now(UTC)
    log = EventLog(engine)
    out = []
    with engine.connect() as conn:
        known = set(log.accounts(conn=conn))
        for acc in sorted(set(accounts) | known):
            last = last_session(conn, acc)
            totals = log.totals(acc, conn=conn)
            last_at = totals.last_received_at
            age = (now - last_at).total_seconds() if last_at else None
            state = AccountState(
                account=acc,
                connected=bool(last is not None and last.connected_at and last.ended_at is None),
                last_session_end=last.end_reason if last is not None else None,
                last_frame_at=last_at,
                last_frame_age_s=age,
                events=totals.events,
                last_event_id=totals.last_id,
            )
            for cp in conn.execute(
                sa.select(projector_checkpoints).where(projector_checkpoints.c.account == acc)
            ):
                state.projector_lag[cp.projector] = lag(state.last_event_id, int(cp.event_id))
                if cp.stale:
                    state.stale.append(cp.projector)
            f = fold_findings.c
            state.findings = {
                projection: int(n)
                for projection, n in conn.execute(
                    sa.select(f.projection, sa.func.count())
                    .where(f.account == acc)
                    .group_by(f.projection)
                    .order_by(f.projection)
                )
            }
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
