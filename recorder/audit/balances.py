"""``verify --balances``: do the balances follow from the entries (audit.md §3)?

Per (account, wallet, currency), three checks:

1. **Ledger chain.** Each ledger row's balance equals the previous row's (by ledger id) plus its
   amount, exactly. A link between two rows is *verifiable* when a complete backfill window
   (every window fetches the ledger) covers both rows' times: a mismatch there is a **break**
   (a row is wrong or missing). Where no window covers the time between them, the ledger was
   never fetched for it: listed as ``unverifiable``, not failed.
2. **Socket changes.** Each ``wu`` change (its balance minus that wallet's previous balance) is
   accounted for by a fill's attribution (``fill_effects`` names the frame) or by its own
   META or description (a category). The others are listed as ``unaccounted``: the exchange
   states the balance itself, so an unaccounted change is a finding, not a break.
3. **Snapshots.** Every balance difference a reconnect's ``ws`` showed against the folded
   balance (``reconciliations``) is explained by ledger rows that sum to it exactly
   (``reconciliation_ledgers``), or it is a **break**.

Amounts are Decimals; nothing is summed in SQL (SQLite would sum doubles).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from recorder.projections.explaining import reconciled_balance
from recorder.projections.values import parse_frame, to_row
from recorder.protocol import layouts as L
from recorder.protocol.ledger import category
from recorder.store.eventlog import EventLog
from recorder.store.schema import (
    backfills,
    fill_effects,
    ledgers,
    reconciliation_ledgers,
    reconciliations,
)
from recorder.store.types import utc

Wallet = tuple[str, str]  # (wallet type, currency)


@dataclass
class BalanceFinding:
    account: str
    wallet: str
    currency: str
    check: str  # 'ledger-chain', 'socket', 'snapshot'
    kind: str  # 'break', 'unverifiable', 'unreadable', 'unaccounted', 'explained'
    at: datetime | None
    detail: str
    by: Decimal | None = None  # how far off
    event_id: int | None = None
    ledger_id: int | None = None
    explained_by: list[int] = field(default_factory=list)  # ledger ids

    @property
    def fails(self) -> bool:
        return self.kind == "break"

    def as_json(self) -> dict[str, Any]:
        return {
            "account": self.account,
            "wallet": self.wallet,
            "currency": self.currency,
            "check": self.check,
            "kind": self.kind,
            "at": self.at.isoformat() if self.at else None,
            "detail": self.detail,
            "by": _text(self.by),
            "event_id": self.event_id,
            "ledger_id": self.ledger_id,
            "explained_by": self.explained_by,
        }


@dataclass
class WalletTally:
    ledger_rows: int = 0
    links_verified: int = 0
    socket_changes: int = 0
    socket_accounted: int = 0
    snapshot_differences: int = 0
    snapshot_explained: int = 0

    def as_json(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass
class BalanceReport:
    findings: list[BalanceFinding] = field(default_factory=list)
    tallies: dict[tuple[str, str, str], WalletTally] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not any(f.fails for f in self.findings)

    def tally(self, account: str, wallet: Wallet) -> WalletTally:
        return self.tallies.setdefault((account, *wallet), WalletTally())

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for f in self.findings:
            name = f"{f.check} {f.kind}"
            out[name] = out.get(name, 0) + 1
        return dict(sorted(out.items()))

    def as_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "counts": self.counts(),
            "wallets": [
                {"account": a, "wallet": w, "currency": c, **t.as_json()}
                for (a, w, c), t in sorted(self.tallies.items())
            ],
            "findings": [f.as_json() for f in self.findings],
        }


def _text(value: Decimal | None) -> str | None:
    return None if value is None else format(value, "f")


def check_balances(engine: sa.Engine, account: str | None = None) -> BalanceReport:
    report = BalanceReport()
    log = EventLog(engine)
    for acc in [account] if account else log.accounts():
        with engine.connect() as conn:
            covered = _coverage(conn, acc)
            _ledger_chain(conn, acc, covered, report)
            carried = {
                e
                for (e,) in conn.execute(
                    sa.select(fill_effects.c.event_id).where(
                        fill_effects.c.account == acc, fill_effects.c.event_id.is_not(None)
                    )
                )
            }
            _snapshots(conn, log, acc, report)
        _socket(log, acc, carried, report)
    report.findings.sort(
        key=lambda f: (
            f.account,
            f.wallet,
            f.currency,
            utc(f.at) or datetime.max.replace(tzinfo=UTC),
            f.check,
        )
    )
    return report


def _coverage(conn: sa.Connection, account: str) -> list[tuple[datetime, datetime]]:
    """The union of the complete backfill windows (when the ledger was fetched), merged."""
    spans = sorted(
        (utc(f), utc(t))
        for f, t in conn.execute(
            sa.select(backfills.c.window_from, backfills.c.window_to).where(
                backfills.c.account == account, backfills.c.complete.is_(True)
            )
        )
        if f is not None and t is not None
    )
    merged: list[tuple[datetime, datetime]] = []
    for start, end in spans:
        assert start is not None and end is not None
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def _covers(spans: list[tuple[datetime, datetime]], start: Any, end: Any) -> bool:
    a, b = utc(start), utc(end)
    if a is None or b is None:
        return False
    return any(s <= a and b <= e for s, e in spans)


def _ledger_chain(
    conn: sa.Connection,
    account: str,
    covered: list[tuple[datetime, datetime]],
    report: BalanceReport,
) -> None:
    c = ledgers.c
    rows = conn.execution_options(yield_per=5000).execute(
        sa.select(c.id, c.wallet, c.currency, c.mts, c.amount, c.balance, c.description)
        .where(c.account == account)
        .order_by(c.wallet, c.currency, c.id)
    )
    previous: Any = None
    for row in rows:
        wallet: Wallet = (row.wallet or "?", row.currency or "?")
        tally = report.tally(account, wallet)
        tally.ledger_rows += 1
        same = previous is not None and (previous.wallet, previous.currency) == (
            row.wallet,
            row.currency,
        )
        if row.amount is None or row.balance is None:
            report.findings.append(
                BalanceFinding(
                    account,
                    *wallet,
                    "ledger-chain",
                    "unreadable",
                    utc(row.mts),
                    f"ledger row {row.id} has no readable amount or balance: the chain "
                    "restarts after it",
                    ledger_id=row.id,
                )
            )
            previous = None
            continue
        if same and previous.balance is not None:
            expected = previous.balance + row.amount
            if expected == row.balance:
                tally.links_verified += 1
            else:
                verifiable = _covers(covered, previous.mts, row.mts)
                report.findings.append(
                    BalanceFinding(
                        account,
                        *wallet,
                        "ledger-chain",
                        "break" if verifiable else "unverifiable",
                        utc(row.mts),
                        f"ledger row {row.id}: balance {_text(row.balance)}, but row "
                        f"{previous.id}'s {_text(previous.balance)} plus {_text(row.amount)} "
                        f"is {_text(expected)}"
                        + (
                            ""
                            if verifiable
                            else " (the ledger was not fetched for all of the time between them)"
                        ),
                        by=row.balance - expected,
                        ledger_id=row.id,
                    )
                )
        previous = row


def _snapshots(conn: sa.Connection, log: EventLog, account: str, report: BalanceReport) -> None:
    r = reconciliations.c
    found = conn.execute(
        sa.select(r.id, r.event_id, r.key, r.folded, r.snapshot, r.explained_by)
        .where(r.account == account, r.projection == "wallets")
        .order_by(r.event_id, r.id)
    ).all()
    links: dict[int, list[int]] = {}
    for rid, lid in conn.execute(
        sa.select(reconciliation_ledgers.c.reconciliation_id, reconciliation_ledgers.c.ledger_id)
        .where(reconciliation_ledgers.c.account == account)
        .order_by(reconciliation_ledgers.c.ledger_id)
    ):
        links.setdefault(rid, []).append(lid)
    times = log.received_at(x.event_id for x in found)
    for rec in found:
        before, after = reconciled_balance(rec.folded), reconciled_balance(rec.snapshot)
        if before == after:
            continue  # not a balance difference (available balance, interest)
        wallet, _, currency = str(rec.key).partition("/")
        tally = report.tally(account, (wallet, currency))
        tally.snapshot_differences += 1
        used = links.get(rec.id, [])
        by = after - before if before is not None and after is not None else None
        if used:
            tally.snapshot_explained += 1
        report.findings.append(
            BalanceFinding(
                account,
                wallet,
                currency,
                "snapshot",
                "explained" if used else "break",
                utc(times.get(rec.event_id)),
                f"snapshot balance {_text(after)} vs folded {_text(before)}: "
                + (
                    f"explained by ledger rows {', '.join(map(str, used))}"
                    if used
                    else "no ledger rows of the gap sum to the difference"
                ),
                by=by,
                event_id=rec.event_id,
                explained_by=used,
            )
        )


def _wallet_frames(log: EventLog, account: str) -> Iterator[tuple[Any, Any]]:
    for r in log.iterate(account, kinds=["ws", "wu"]):
        try:
            yield r, parse_frame(r.frame)
        except ValueError:
            continue


def _socket(log: EventLog, account: str, carried: set[int], report: BalanceReport) -> None:
    balances: dict[Wallet, Decimal | None] = {}
    for r, frame in _wallet_frames(log, account):
        payload = frame[2] if isinstance(frame, list) and len(frame) > 2 else None
        if r.kind == "ws":
            balances = {}
            for array in payload if isinstance(payload, list) else []:
                if isinstance(array, list):
                    w = to_row(L.WALLET, array)
                    balances[(w["wallet_type"], w["currency"])] = w["balance"]
            continue
        if not isinstance(payload, list):
            continue
        w = to_row(L.WALLET, payload)
        key = (w["wallet_type"], w["currency"])
        before, after = balances.get(key), w["balance"]
        balances[key] = after
        if before is None or after is None or before == after:
            continue
        tally = report.tally(account, key)
        tally.socket_changes += 1
        meta = payload[6] if len(payload) > 6 and isinstance(payload[6], dict) else None
        if r.id in carried or (meta and meta.get("reason")) or category(w["last_change"]):
            tally.socket_accounted += 1
            continue
        report.findings.append(
            BalanceFinding(
                account,
                *key,
                "socket",
                "unaccounted",
                utc(r.received_at),
                f"wu changed the balance by {_text(after - before)} "
                f"({w['last_change'] or 'no description'}): no fill or category accounts for it",
                by=after - before,
                event_id=r.id,
            )
        )
