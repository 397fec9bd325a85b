"""Wallet reconciliations explained by the ledger rows that account for them, exactly
(audit.md §3 item 3).

A snapshot after a reconnect that disagrees with the folded balance is explained only by
ledger rows of that wallet and currency that take the folded balance to the snapshot's: a run
of consecutive entries (by ledger id) whose first one starts from the folded balance
(``balance - amount``), each one's balance the previous one's plus its amount, and the last one
ending at the snapshot's balance, no later than :data:`SLACK` after the snapshot was received
(ledger times drift by minutes). Their amounts then sum to the difference exactly. The
reconciliation's ``explained_by`` is the latest ledger answer among them and
``reconciliation_ledgers`` names each row. A REST answer that repeats the balance explains
nothing.

Run when a ledger answer is folded, over the ledger rows of answers up to it (their
``event_id``), so the result is a function of the log prefix: a rebuild explains the same rows
with the same answers as the live fold did.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

import sqlalchemy as sa

from recorder.store.schema import events, ledgers, reconciliation_ledgers, reconciliations

SLACK = timedelta(minutes=10)


def reconciled_balance(doc: Any) -> Decimal | None:
    """The balance of a reconciliation's folded/snapshot JSON (None: no such wallet, which
    is a balance of zero)."""
    if not isinstance(doc, dict):
        return Decimal(0)
    value = doc.get("balance")
    try:
        return Decimal(str(value)) if value is not None else Decimal(0)
    except InvalidOperation:
        return None


def explain_by_ledgers(conn: sa.Connection, account: str, answers: list[int]) -> int:
    """Explain what the ledger rows of ``answers`` (and earlier ones) account for; the
    number of reconciliations explained."""
    rec = reconciliations.c
    explained = 0
    for answer in sorted(answers):
        open_rows = conn.execute(
            sa.select(rec.id, rec.key, rec.event_id, rec.folded, rec.snapshot, events.c.received_at)
            .join(events, events.c.id == rec.event_id)
            .where(
                rec.account == account,
                rec.projection == "wallets",
                rec.explained_by.is_(None),
                rec.event_id < answer,
            )
            .order_by(rec.id)
        ).all()
        for rid, key, _event_id, folded, snapshot, received_at in open_rows:
            before, after = reconciled_balance(folded), reconciled_balance(snapshot)
            if before is None or after is None or before == after:
                continue
            wallet, _, currency = str(key).partition("/")
            run = _run(conn, account, wallet, currency, answer, before, after, received_at)
            if run is None:
                continue
            conn.execute(
                reconciliations.update()
                .where(rec.id == rid)
                .values(explained_by=max(r.event_id for r in run))
            )
            conn.execute(
                reconciliation_ledgers.insert(),
                [{"account": account, "reconciliation_id": rid, "ledger_id": r.id} for r in run],
            )
            explained += 1
    return explained


def _run(
    conn: sa.Connection,
    account: str,
    wallet: str,
    currency: str,
    answer: int,
    before: Decimal,
    after: Decimal,
    received_at: Any,
) -> list[Any] | None:
    """The latest run of ledger entries from ``before`` to ``after`` (see the module)."""
    c = ledgers.c
    query = (
        sa.select(c.id, c.mts, c.amount, c.balance, c.event_id)
        .where(
            c.account == account,
            c.wallet == wallet,
            c.currency == currency,
            c.event_id <= answer,
        )
        .order_by(c.id)
    )
    if received_at is not None:
        query = query.where(c.mts <= received_at + SLACK)
    rows = [r for r in conn.execute(query) if r.amount is not None and r.balance is not None]
    for end in range(len(rows) - 1, -1, -1):
        if rows[end].balance != after:
            continue
        total = Decimal(0)
        for start in range(end, -1, -1):
            row = rows[start]
            if (
                start < end
                and rows[start].balance + rows[start + 1].amount != rows[start + 1].balance
            ):
                break  # the chain breaks inside: these rows do not add up
            total += row.amount
            if row.balance - row.amount == before and total == after - before:
                return rows[start : end + 1]
    return None
