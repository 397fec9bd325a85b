"""Health in one room: one reading of the daemon's in-memory state, one lag calculation.

``/healthz``, ``/metrics``, the summary line, the tests' waits and the benchmarks all look
at the recorder through :func:`read`; ``status`` (from the database) uses :func:`lag` too.
Nothing here imports the daemon: it reads whatever has the daemon's shape
(:class:`Observed`), so metrics and health sit below it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from recorder.config import Config, StatusConfig


def lag(head: int, checkpoint: int) -> int:
    """Log events a projection has not folded yet (its checkpoint against the head)."""
    return max(head - checkpoint, 0)


class Observed(Protocol):
    """What a reading needs of the daemon (``recorder.daemon.Recorder`` has it)."""

    @property
    def cfg(self) -> Config: ...
    @property
    def status(self) -> Mapping[str, Any]: ...  # account -> AccountStatus
    @property
    def writer(self) -> Any: ...  # high_water, stats, queue_depth, lag_seconds, observers
    @property
    def projectors(self) -> Sequence[Any]: ...  # ProjectionView: account, name, checkpoint
    @property
    def pool(self) -> Any: ...  # ProjectionPool or None: stood_back, failures, failing
    @property
    def backfillers(self) -> Mapping[str, Any]: ...  # account -> Backfiller: open_windows


@dataclass(frozen=True)
class AccountReading:
    account: str
    connected: bool
    disconnected_for: float  # seconds, 0 while connected
    reconnect_allowance: float
    stopped: str | None  # why the account stopped for good, or None
    last_reason: str | None
    ends: dict[str, int]
    last_frame_at: datetime | None
    last_frame_age: float  # seconds (inf: never)
    head: int  # the last committed log position
    open_windows: int  # backfill windows queued, running or to retry
    lag: int  # the slowest projection's lag, in events


@dataclass(frozen=True)
class ProjectionReading:
    account: str
    name: str
    checkpoint: int
    lag: int  # events
    lag_seconds: float  # age of the oldest commit not folded yet
    reconciled: int


@dataclass(frozen=True)
class Reading:
    at: datetime
    accounts: dict[str, AccountReading]
    projections: list[ProjectionReading]
    queue_depth: int
    stand_backs: int
    failures: int
    failing: str | None  # the projection rounds' error while they keep failing


def read(recorder: Observed, now: datetime | None = None) -> Reading:
    """The recorder as it stands now, from memory (no database query)."""
    now = now or datetime.now(UTC)
    writer = recorder.writer
    high = writer.high_water
    projections = [
        ProjectionReading(
            p.account,
            p.name,
            p.checkpoint,
            lag(high.get(p.account, 0), p.checkpoint),
            writer.lag_seconds(p.account, p.checkpoint),
            p.reconciled,
        )
        for p in recorder.projectors
    ]
    slowest: dict[str, int] = {}
    for p in projections:
        slowest[p.account] = max(slowest.get(p.account, 0), p.lag)
    accounts = {}
    for account, status in recorder.status.items():
        last = writer.stats.last_frame_at.get(account)
        backfiller = recorder.backfillers.get(account)
        accounts[account] = AccountReading(
            account=account,
            connected=status.connected,
            disconnected_for=status.disconnected_for(),
            reconnect_allowance=status.reconnect_allowance,
            stopped=status.stopped.reason if status.stopped is not None else None,
            last_reason=status.last_reason,
            ends=dict(status.ends),
            last_frame_at=last,
            last_frame_age=(now - last).total_seconds() if last else math.inf,
            head=high.get(account, 0),
            open_windows=backfiller.open_windows if backfiller is not None else 0,
            lag=slowest.get(account, 0),
        )
    pool = recorder.pool
    return Reading(
        at=now,
        accounts=accounts,
        projections=projections,
        queue_depth=writer.queue_depth,
        stand_backs=pool.stood_back if pool is not None else 0,
        failures=pool.failures if pool is not None else 0,
        failing=pool.failing if pool is not None else None,
    )


def verdict(reading: Reading, bounds: StatusConfig) -> tuple[bool, str]:
    """Healthy when every account is connected, or reconnecting within its back-off, frames
    and projections are within the ``[status]`` bounds, and projection rounds are not
    failing. Returns (ok, reason)."""
    for account, a in reading.accounts.items():
        if a.stopped is not None:
            return False, f"account {account} stopped: {a.stopped}"
        if not a.connected and a.disconnected_for > a.reconnect_allowance:
            return False, f"account {account} not connected ({a.last_reason})"
        if a.last_frame_at is not None and a.last_frame_age > bounds.max_frame_age_s:
            return False, f"account {account}: last frame {a.last_frame_age:.0f}s ago"
    if reading.failing is not None:
        return False, f"projections failing (recording goes on): {reading.failing}"
    for p in reading.projections:
        if p.lag > bounds.max_projector_lag:
            return False, f"projector {p.name} of {p.account} is {p.lag} events behind"
    return True, "ok"


def caught_up(recorder: Observed, account: str) -> bool:
    """Every projection of ``account`` has folded everything committed so far."""
    head = recorder.writer.high_water.get(account, 0)
    return all(lag(head, p.checkpoint) == 0 for p in recorder.projectors if p.account == account)
