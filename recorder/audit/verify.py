"""``bfx-recorder verify``: recompute the hash chain and list every gap in the record."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
import sqlalchemy as sa

from recorder.store.eventlog import EventLog
from recorder.store.hashchain import GENESIS, chain_hash
from recorder.store.schema import backfills, reconciliations
from recorder.store.sessions import account_sessions
from recorder.store.types import utc

PAGE = 10000


@dataclass
class Finding:
    account: str
    at: datetime | None
    # 'session-ended', 'session-times', 'seq-gap', 'malformed', 'reconciliation',
    # 'backfill-incomplete', 'downtime'
    what: str
    detail: str
    event_id: int | None = None
    seconds: float | None = None  # how long the record was interrupted, for session ends

    def as_json(self) -> dict[str, object]:
        return {
            "account": self.account,
            "at": self.at.isoformat() if self.at else None,
            "what": self.what,
            "detail": self.detail,
            "event_id": self.event_id,
            "seconds": self.seconds,
        }


@dataclass
class Report:
    """What verify found: per account, events checked and the first bad one."""

    checked: dict[str, int] = field(default_factory=dict)  # account -> events checked
    broken: dict[str, int] = field(default_factory=dict)  # account -> first bad event id
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.broken

    def counts(self) -> dict[str, int]:
        """How many findings of each kind."""
        out: dict[str, int] = {}
        for f in self.findings:
            out[f.what] = out.get(f.what, 0) + 1
        return dict(sorted(out.items()))


def verify(engine: sa.Engine, account: str | None = None) -> Report:
    report = Report()
    log = EventLog(engine)
    for acc in [account] if account else log.accounts():
        _check_chain(log, acc, report)
        _gaps(engine, log, acc, report)
    # By time, then log position (findings without a time last in their account).
    far = datetime.max.replace(tzinfo=UTC)
    report.findings.sort(key=lambda f: (f.account, utc(f.at) or far, f.event_id or 0, f.what))
    return report


@dataclass(frozen=True)
class Walk:
    """A walk along the chain: the first bad row (None: intact), the rows verified before
    it, and the last verified row's id and hash (where a later walk goes on from)."""

    bad: int | None
    checked: int
    last_id: int
    last_hash: str


def walk_chain(
    log: EventLog,
    account: str,
    *,
    after: int = 0,
    prev: str = GENESIS,
    up_to: int | None = None,
    tick: Callable[[int], None] | None = None,
) -> Walk:
    """Recompute the account's hash chain from the row after ``after`` (whose hash is
    ``prev``) up to ``up_to``."""
    last_id, checked = after, 0
    for r in log.iterate(account, after=after, up_to=up_to, page=PAGE):
        assert r.received_at is not None
        expected = chain_hash(
            prev,
            r.account,
            r.session_id,
            r.received_at,
            r.chan_id,
            r.kind,
            r.seq,
            r.auth_seq,
            r.frame,
        )
        if r.hash != expected:
            return Walk(r.id, checked, last_id, prev)
        prev, last_id = r.hash, r.id
        checked += 1
        if tick is not None:
            tick(1)
    return Walk(None, checked, last_id, prev)


def first_bad(
    log: EventLog, account: str, up_to: int | None = None, tick: Callable[[int], None] | None = None
) -> tuple[int | None, int]:
    """Recompute the account's hash chain (up to ``up_to``): the first row whose hash does
    not follow (None: intact) and how many rows verified before it."""
    walk = walk_chain(log, account, up_to=up_to, tick=tick)
    return walk.bad, walk.checked


def _check_chain(log: EventLog, account: str, report: Report) -> None:
    bad, checked = first_bad(log, account)
    if bad is not None:
        report.broken[account] = bad
    report.checked[account] = checked


def _session_times(history: list[Any], account: str, add: Callable[[Finding], None]) -> None:
    """Sessions whose times are out of order: a wall-clock step (ended before it started,
    started before the previous one ended). Times in the log are the wall clock's; these
    say where they cannot be taken at face value."""
    previous_end: datetime | None = None
    for s in history:
        started, ended = utc(s.started_at), utc(s.ended_at)
        if started is not None and ended is not None and ended < started:
            add(
                Finding(
                    account,
                    started,
                    "session-times",
                    f"session {s.id} ended ({ended.isoformat()}) before it started "
                    f"({started.isoformat()}): the wall clock stepped back",
                )
            )
        if started is not None and previous_end is not None and started < previous_end:
            add(
                Finding(
                    account,
                    started,
                    "session-times",
                    f"session {s.id} started ({started.isoformat()}) before the previous one "
                    f"ended ({previous_end.isoformat()}): the wall clock stepped back",
                )
            )
        if ended is not None:
            previous_end = ended


def _gaps(engine: sa.Engine, log: EventLog, account: str, report: Report) -> None:
    """Every finding of an account: how its sessions ended, what its log marks, what the
    projections could not explain or fetch."""
    add = report.findings.append
    history = account_sessions(engine, account)
    _session_times(history, account, add)
    _session_ends(history, account, add)
    _marked(log, account, add)
    _unexplained(engine, log, account, add)


def _still_recording(engine: sa.Engine, account: str) -> bool:
    """Whether the account's last session has no end (its recorder may be running)."""
    history = account_sessions(engine, account)
    return bool(history) and history[-1].ended_at is None


def _session_ends(history: list[Any], account: str, add: Callable[[Finding], None]) -> None:
    """Sessions that ended other than by a shutdown (and how long the record paused), or
    that have no end."""
    for n, s in enumerate(history):
        if s.end_reason not in (None, "shutdown"):
            resumed = next(
                (x.authenticated_at for x in history[n + 1 :] if x.authenticated_at), None
            )
            seconds = (
                (utc(resumed) - utc(s.ended_at)).total_seconds()  # type: ignore[operator]
                if resumed and s.ended_at
                else None
            )
            lasted = f"; not recorded for {seconds:.1f} s" if seconds is not None else ""
            add(
                Finding(
                    account,
                    s.ended_at,
                    "session-ended",
                    f"session {s.id} ended: {s.end_reason}"
                    + (f" (auth {s.auth_status} {s.auth_code})" if s.auth_code else "")
                    + lasted,
                    seconds=seconds,
                )
            )
        elif s.end_reason == "shutdown":
            resumed = next((x for x in history[n + 1 :] if x.started_at is not None), None)
            if resumed is not None and s.ended_at is not None:
                seconds = (utc(resumed.started_at) - utc(s.ended_at)).total_seconds()  # type: ignore[operator]
                add(
                    Finding(
                        account,
                        s.ended_at,
                        "downtime",
                        f"the recorder was stopped after session {s.id} and started again "
                        f"{seconds:.1f} s later",
                        seconds=seconds,
                    )
                )
        elif s.end_reason is None and s.ended_at is None:
            add(
                Finding(
                    account,
                    s.started_at,
                    "session-ended",
                    f"session {s.id} has no end (the process died or is running)",
                )
            )


def _marked(log: EventLog, account: str, add: Callable[[Finding], None]) -> None:
    """Sequence problems and unreadable frames, as the log marks them."""
    for r in log.iterate(account, kinds=["recorder.seq-gap", "malformed"]):
        if r.kind == "malformed":
            detail = f"unreadable frame ({len(r.frame)} chars) kept raw"
            add(Finding(account, r.received_at, "malformed", detail, r.id))
        else:
            gap: dict[str, Any] = orjson.loads(r.frame)
            detail = (
                f"{gap.get('counter')} {gap.get('problem')}: expected "
                f"{gap.get('expected')}, got {gap.get('got')}"
            )
            add(Finding(account, r.received_at, "seq-gap", detail, r.id))


def _unexplained(
    engine: sa.Engine, log: EventLog, account: str, add: Callable[[Finding], None]
) -> None:
    """Reconciliation differences no REST answer explains, and backfill windows that never
    completed (nor did a later try of the same window)."""
    with engine.connect() as conn:
        # Differences no REST answer accounts for (a backfill explains the others).
        found = conn.execute(
            sa.select(reconciliations)
            .where(reconciliations.c.account == account, reconciliations.c.explained_by.is_(None))
            .order_by(reconciliations.c.event_id)
        ).all()
        windows = conn.execute(
            sa.select(backfills)
            .where(backfills.c.account == account, backfills.c.complete.is_not(True))
            .order_by(backfills.c.id)
        ).all()
        # A window retried until complete is no gap any more.
        done = {
            (w.window_from, w.window_to)
            for w in conn.execute(
                sa.select(backfills.c.window_from, backfills.c.window_to).where(
                    backfills.c.account == account, backfills.c.complete.is_(True)
                )
            )
        }
    times = log.received_at(rec.event_id for rec in found)
    for rec in found:
        add(
            Finding(
                account,
                times.get(rec.event_id),
                "reconciliation",
                f"{rec.projection} {rec.key}: {rec.problem} (unexplained)",
                rec.event_id,
            )
        )
    latest = max((w.id for w in windows), default=None)
    running = _still_recording(engine, account)
    for w in windows:
        if (w.window_from, w.window_to) in done:
            continue
        if w.complete is not None:
            state = "incomplete"
        elif w.id == latest and running:
            state = "still running"
        else:
            state = "interrupted (no end marker: the recorder stopped during it)"
        add(
            Finding(
                account,
                w.window_from,
                "backfill-incomplete",
                f"backfill {state}: {w.window_from} .. {w.window_to} ({w.reason})",
                w.id,
            )
        )
