"""Reading for the folds: log pages -> parsed events, and a fold brought to its checkpoint
(restored from the rows and flags it stored). What ``state --at`` and every runner import.

Why no event is ever skipped (design.md invariant 2): appends are serialized (SQLite's single
writer; on PostgreSQL each append transaction locks ``events`` first), so ids become visible
in id order. A batch reads the account's high-water mark first (``EventLog.read``) and then
only events up to it, and moves the checkpoint at most to that value, so an event that is
still being committed has a larger id than anything the checkpoint passes.

Each fold reads only its own kinds (``kind IN (...)``), so the log is parsed about once in
total however many projections there are.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa

from recorder.projections.base import Event, Fold, FoldFlags, Output
from recorder.projections.values import parse_frame
from recorder.store.eventlog import EventLog, StoredEvent
from recorder.store.schema import PROJECTION_TABLES

Flags = dict[str, FoldFlags]  # per projection name

BATCH = 5000  # events a step reads at most


def _stored_rows(conn: sa.Connection, fold: Fold, account: str, up_to: int) -> list[dict[str, Any]]:
    """The rows of ``fold``'s table that its ``restore_from`` asks for."""
    spec = fold.restore_from
    if spec is None:
        return []
    table = PROJECTION_TABLES[fold.name]
    query = sa.select(table).where(table.c.account == account)
    for col, value in spec.equal:
        query = query.where(table.c[col] == value)
    for col, value in spec.not_equal:
        query = query.where(table.c[col] != value)
    if spec.latest_row:
        query = query.where(table.c.event_id <= up_to).order_by(table.c.event_id.desc()).limit(1)
    rows = [dict(r) for r in conn.execute(query).mappings()]
    for name in spec.also:
        other = PROJECTION_TABLES[name]
        found = conn.execute(sa.select(other).where(other.c.account == account)).mappings()
        rows.extend({**r, "_table": name} for r in found)
    return rows


def read_events(
    conn: sa.Connection,
    log: EventLog,
    account: str,
    kinds: Iterable[str],
    after: int,
    limit: int,
    up_to: int | None = None,
    known_high: int | None = None,
) -> tuple[list[Event], int]:
    """Events of ``kinds`` after ``after``, parsed for the folds; and the position covered
    (``known_high``: see :meth:`EventLog.read`)."""
    page = log.read(
        account, after, limit, kinds, up_to, brief=True, known_high=known_high, conn=conn
    )
    return parse_events(page.events), page.covered


def parse_events(rows: Iterable[StoredEvent]) -> list[Event]:
    """Log rows as the folds read them (a frame that does not parse is counted as skipped
    by the fold)."""
    out = []
    for r in rows:
        try:
            payload = parse_frame(r.frame)
        except ValueError:
            payload = None
        out.append(Event(r.id, r.kind, payload, r.received_at))
    return out


def restore_fold(
    conn: sa.Connection,
    log: EventLog,
    fold: Fold,
    account: str,
    checkpoint: int,
    flags: FoldFlags | None = None,
    *,
    use_rows: bool = True,
) -> None:
    """Bring ``fold`` to its state at ``checkpoint``: hand it its stored rows, then fold again
    the events it needs to complete them (the folds decide both; no findings are kept)."""
    rows = _stored_rows(conn, fold, account, checkpoint) if use_rows else []
    after = fold.restore(rows, flags or FoldFlags(), checkpoint)
    scratch = Output()
    while after < checkpoint:
        batch, covered = read_events(conn, log, account, fold.kinds, after, BATCH, checkpoint)
        for ev in batch:
            fold.apply(ev, scratch)
        scratch.clear()
        if covered == after:
            break
        after = covered


def _flags_of(row: Any) -> FoldFlags:
    """The flags of a ``projector_checkpoints`` row."""
    return FoldFlags(bool(row.stale), bool(row.synced), int(row.skipped))


# --- one batch ------------------------------------------------------------------------------
