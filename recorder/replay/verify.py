"""``bfx-recorder verify``: recompute the hash chain and list every gap in the record."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
import sqlalchemy as sa

from recorder.store.hashchain import GENESIS, chain_hash
from recorder.store.schema import events, reconciliations, sessions

PAGE = 10000


@dataclass
class Finding:
    account: str
    at: datetime | None
    what: str  # 'session-ended', 'seq-gap', 'malformed', 'reconciliation'
    detail: str
    event_id: int | None = None


@dataclass
class Report:
    checked: dict[str, int] = field(default_factory=dict)  # account -> events checked
    broken: dict[str, int] = field(default_factory=dict)  # account -> first bad event id
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.broken


def verify(engine: sa.Engine, account: str | None = None) -> Report:
    report = Report()
    with engine.connect() as conn:
        accounts = (
            [account]
            if account
            else list(conn.execute(sa.select(events.c.account).distinct()).scalars())
        )
    for acc in sorted(accounts):
        _check_chain(engine, acc, report)
        _gaps(engine, acc, report)
    report.findings.sort(key=lambda f: (f.account, f.event_id or 0, f.what))
    return report


def _check_chain(engine: sa.Engine, account: str, report: Report) -> None:
    prev, after, checked = GENESIS, 0, 0
    while True:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.select(events)
                .where(events.c.account == account, events.c.id > after)
                .order_by(events.c.id)
                .limit(PAGE)
            ).all()
        if not rows:
            break
        for r in rows:
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
                report.broken[account] = r.id
                report.checked[account] = checked
                return
            prev = r.hash
            checked += 1
        after = rows[-1].id
    report.checked[account] = checked


def _gaps(engine: sa.Engine, account: str, report: Report) -> None:
    add = report.findings.append
    with engine.connect() as conn:
        for s in conn.execute(
            sa.select(sessions).where(sessions.c.account == account).order_by(sessions.c.id)
        ):
            if s.end_reason not in (None, "shutdown"):
                add(
                    Finding(
                        account,
                        s.ended_at,
                        "session-ended",
                        f"session {s.id} ended: {s.end_reason}"
                        + (f" (auth {s.auth_status} {s.auth_code})" if s.auth_code else ""),
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
        for r in conn.execute(
            sa.select(events.c.id, events.c.received_at, events.c.kind, events.c.frame)
            .where(
                events.c.account == account, events.c.kind.in_(["recorder.seq-gap", "malformed"])
            )
            .order_by(events.c.id)
        ):
            if r.kind == "malformed":
                add(
                    Finding(
                        account,
                        r.received_at,
                        "malformed",
                        f"unreadable frame ({len(r.frame)} chars) kept raw",
                        r.id,
                    )
                )
            else:
                gap: dict[str, Any] = orjson.loads(r.frame)
                add(
                    Finding(
                        account,
                        r.received_at,
                        "seq-gap",
                        f"{gap.get('counter')} {gap.get('problem')}: expected "
                        f"{gap.get('expected')}, got {gap.get('got')}",
                        r.id,
                    )
                )
        for rec in conn.execute(
            sa.select(reconciliations, events.c.received_at)
            .join(events, events.c.id == reconciliations.c.event_id)
            .where(reconciliations.c.account == account)
            .order_by(reconciliations.c.event_id)
        ):
            add(
                Finding(
                    account,
                    rec.received_at,
                    "reconciliation",
                    f"{rec.projection} {rec.key}: {rec.problem}",
                    rec.event_id,
                )
            )
