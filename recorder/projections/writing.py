"""Writing what the folds produce: rows (one statement per table for a batch of accounts),
the rows no table can hold (``fold_findings``), reconciliations, and checkpoints, all in the
caller's transaction. The one place the fold's write path lives.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, NamedTuple

import sqlalchemy as sa

from recorder.projections.base import Fold, Output
from recorder.projections.explaining import explain_by_ledgers
from recorder.projections.guard import Finding, escape_nul
from recorder.projections.registry import FOLDS
from recorder.store.errors import store_errors
from recorder.store.prepared import RowStatement, statements
from recorder.store.schema import (
    PROJECTION_TABLES,
    fold_findings,
    projector_checkpoints,
    reconciliation_ledgers,
    reconciliations,
)

# Tables where an update's missing (null) values keep the stored ones (tu after te).
COALESCE_TABLES = frozenset({"trades", "funding_trades"})


def write_output(conn: sa.Connection, account: str, out: Output) -> None:
    write_outputs(conn, [(account, out)])


def write_outputs(conn: sa.Connection, outputs: list[tuple[str, Output]]) -> None:
    """The rows of several accounts' batches: one statement per table for all of them."""
    prepared = statements(conn)
    # Per statement, the rows of every account bound to it; upserts first, as before.
    batches: dict[RowStatement, list[Any]] = {}
    for account, out in outputs:
        for name, rows in out.upserts.items():
            table = PROJECTION_TABLES[name]
            stmt = prepared.upsert(table, keep_stored=name in COALESCE_TABLES)
            bound = batches.setdefault(stmt, [])
            gone = []
            for key, row in rows.items():
                if row is None:
                    gone.append(key)
                else:
                    bound.append(stmt.bind(account, row))
            if gone:
                _delete_rows(conn, table, account, gone)
    for account, out in outputs:
        for name, ins_rows in out.inserts_if_absent.items():
            stmt = prepared.insert_if_absent(PROJECTION_TABLES[name])
            batches.setdefault(stmt, []).extend(stmt.bind(account, r) for r in ins_rows.values())
    for account, out in outputs:
        for name, conf_rows in out.confirms.items():
            stmt = prepared.confirm(PROJECTION_TABLES[name])
            batches.setdefault(stmt, []).extend(stmt.bind(account, r) for r in conf_rows.values())
    for account, out in outputs:
        for name, final_rows in out.finals.items():
            stmt = prepared.confirm_final(PROJECTION_TABLES[name])
            batches.setdefault(stmt, []).extend(stmt.bind(account, r) for r in final_rows.values())
    for stmt, params in batches.items():
        if params:
            stmt.run(conn, params)
    for account, out in outputs:
        _write_findings(conn, account, out)
    unfit = [(account, f) for account, out in outputs for f in out.unfit.values()]
    if unfit:
        _write_unfit(conn, unfit)


def _write_unfit(conn: sa.Connection, unfit: list[tuple[str, Finding]]) -> None:
    """Rows no table could hold, one per (table, event, key) (rare: written the plain
    way; one already there, from a fold of the same events, is replaced)."""
    latest = {(account, f.projection, f.event_id, f.key): f for account, f in unfit}
    c = fold_findings.c
    for account, projection, event_id, key in latest:
        conn.execute(
            fold_findings.delete().where(
                c.account == account,
                c.projection == projection,
                c.event_id == event_id,
                c.key == key,
            )
        )
    conn.execute(
        fold_findings.insert(),
        [
            {
                "account": account,
                "projection": f.projection,
                "key": f.key,
                "event_id": f.event_id,
                "reason": f.reason,
                "row": f.row,
            }
            for (account, _, _, _), f in latest.items()
        ],
    )


def _delete_rows(
    conn: sa.Connection, table: sa.Table, account: str, keys: list[tuple[Any, ...]]
) -> None:
    key_cols = [c.name for c in table.primary_key.columns if c.name != "account"]
    for key in keys:
        conn.execute(
            table.delete().where(
                table.c.account == account,
                *[table.c[c] == v for c, v in zip(key_cols, key, strict=True)],
            )
        )


def _write_findings(conn: sa.Connection, account: str, out: Output) -> None:
    """Reconciliation rows and their explanations (rare: written the plain way)."""
    if out.reconciliations:
        conn.execute(
            reconciliations.insert(),
            [
                {
                    "event_id": r.event_id,
                    "account": account,
                    "projection": r.projection,
                    "key": escape_nul(r.key),
                    "problem": r.problem,
                    "folded": escape_nul(r.folded),
                    "snapshot": escape_nul(r.snapshot),
                }
                for r in out.reconciliations
            ],
        )
    if out.explanations:
        rec = reconciliations.c
        conn.execute(
            reconciliations.update()
            .where(
                rec.account == account,
                rec.projection == sa.bindparam("p"),
                rec.key == sa.bindparam("k"),
                rec.explained_by.is_(None),
                rec.event_id < sa.bindparam("e"),
            )
            .values(explained_by=sa.bindparam("e")),
            [{"p": p, "k": k, "e": e} for p, k, e in out.explanations],
        )
    if out.ledger_answers:
        explain_by_ledgers(conn, account, out.ledger_answers)


_CHECKPOINT_UPDATES = ("event_id", "updated_at", "stale", "synced", "skipped")
_cp = projector_checkpoints.c
# Every projection's checkpoint of one account moves to one position (names are literals:
# an executemany cannot expand a list parameter).
_MOVE_CHECKPOINTS = (
    projector_checkpoints.update()
    .where(_cp.account == sa.bindparam("a"))
    .where(_cp.projector.in_([sa.literal_column(f"'{name}'") for name in FOLDS]))
    .values(event_id=sa.bindparam("e"), updated_at=sa.bindparam("t"))
)


class Position(NamedTuple):
    """The checkpoints of one account's folds after a step. ``moved_only``: every fold has
    its checkpoint row and the same flags as stored, so only the position changes.
    ``ahead``: folds whose own position is past ``event_id`` (they keep it)."""

    account: str
    folds: list[Fold]
    event_id: int
    moved_only: bool = False
    ahead: dict[str, int] = {}


def write_all_checkpoints(conn: sa.Connection, positions: list[Position]) -> None:
    """The checkpoints of several accounts' folds. Accounts whose folds' flags are unchanged
    take one row of parameters each (one ``UPDATE`` of all their projections' rows); the
    others one upsert row per fold. At 100 accounts a round wrote 1,600 checkpoint rows, the
    third of the live projectors' time; the flags change only at disconnects and
    snapshots."""
    now = datetime.now(UTC)
    moved = [{"a": p.account, "e": p.event_id, "t": now} for p in positions if p.moved_only]
    if moved and conn.execute(_MOVE_CHECKPOINTS, moved).rowcount != len(moved) * len(FOLDS):
        # A row went missing under us (a `rebuild --projection` cleared it): upsert them all.
        positions = [p._replace(moved_only=False) for p in positions]
    stmt = statements(conn).upsert(projector_checkpoints, update=_CHECKPOINT_UPDATES)
    # Shared values are converted once.
    stamp = stmt.convert("updated_at", now)
    yes, no = stmt.convert("stale", True), stmt.convert("stale", False)
    params = []
    for account, folds, event_id, moved_only, ahead in positions:
        if moved_only:
            continue
        for fold in folds:
            flags = fold.snapshot()
            row = {
                "projector": fold.name,
                "event_id": ahead.get(fold.name, event_id),
                "updated_at": stamp,
                "stale": yes if flags.stale else no,
                "synced": yes if flags.synced else no,
                "skipped": flags.skipped,
            }
            params.append(stmt.bind(account, row, converted=True))
    if params:
        stmt.run(conn, params)


# --- rebuild ---------------------------------------------------------------------------------


def clear_projection(engine: sa.Engine, name: str, account: str) -> None:
    table = PROJECTION_TABLES[name]
    with store_errors(), engine.begin() as conn:
        conn.execute(table.delete().where(table.c.account == account))
        if name == "wallets":  # its reconciliations go below, and what explained them
            conn.execute(
                reconciliation_ledgers.delete().where(reconciliation_ledgers.c.account == account)
            )
        for findings in (reconciliations, fold_findings):
            conn.execute(
                findings.delete().where(
                    findings.c.account == account, findings.c.projection == name
                )
            )
        conn.execute(
            projector_checkpoints.delete().where(
                projector_checkpoints.c.account == account,
                projector_checkpoints.c.projector == name,
            )
        )
