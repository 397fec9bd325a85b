"""What every fold shares: the event it reads and the changes it produces.

A fold is pure: ``apply(event)`` updates its in-memory state and reports row changes and
reconciliation findings to an :class:`Output`. The database runner persists them; ``state
--at`` uses the same folds without a database. Nothing here does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple, Protocol

from recorder.projections.guard import Finding, check_named, storable_key
from recorder.store.prepared import PROVENANCE

DISCONNECTED = "recorder.disconnected"


class Event(NamedTuple):
    """One log event as the folds read it (a named tuple: a fold pass makes one per event,
    and a frozen dataclass's constructor cost more than the tuple)."""

    id: int
    kind: str
    payload: Any  # the frame parsed with Decimal numbers; for markers, the marker object
    # When it was read, as the database returned it (text on SQLite): converted only when a
    # fold dates a row by arrival (most never ask; converting every one cost 7% of a fold).
    stamp: datetime | str | None = None

    @property
    def received_at(self) -> datetime | None:
        value = self.stamp
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


@dataclass(frozen=True)
class Reconciliation:
    event_id: int
    projection: str
    key: str
    problem: str  # 'missing' (snapshot has it, fold does not), 'unexpected', 'changed'
    folded: dict[str, Any] | None
    snapshot: dict[str, Any] | None


def final_merge(stored: dict[str, Any], row: dict[str, Any]) -> dict[str, Any]:
    """``row`` (a history answer's) over ``stored``, as ``Statements.confirm_final`` merges
    them in the database: NULLs keep the stored value, ``event_id`` is the stored one unless
    a value changed, ``confirmed_by`` the answer."""
    changed = any(
        v is not None and v != stored.get(k) for k, v in row.items() if k not in PROVENANCE
    )
    merged = {**stored, **{k: v for k, v in row.items() if v is not None}}
    merged["event_id"] = row["event_id"] if changed else stored["event_id"]
    merged["confirmed_by"] = row["event_id"]
    return merged


@dataclass
class Output:
    """Changes to persist, per table: key -> full row (None = delete the row)."""

    upserts: dict[str, dict[tuple[Any, ...], dict[str, Any] | None]] = field(default_factory=dict)
    inserts_if_absent: dict[str, dict[tuple[Any, ...], dict[str, Any]]] = field(
        default_factory=dict
    )
    # REST rows repeating what a frame may already have set (``Statements.confirm``).
    confirms: dict[str, dict[tuple[Any, ...], dict[str, Any]]] = field(default_factory=dict)
    # History rows (final states) for entities a frame may already have closed
    # (``Statements.confirm_final``).
    finals: dict[str, dict[tuple[Any, ...], dict[str, Any]]] = field(default_factory=dict)
    reconciliations: list[Reconciliation] = field(default_factory=list)
    # Rows no table can hold (guard.py), per (table, event id, key): left out, kept as
    # findings. Checked as each event's row is produced, so the findings are the same
    # however the events were batched (a live fold and a rebuild agree).
    unfit: dict[tuple[str, int, str], Finding] = field(default_factory=dict)
    # (projection, key, event id of a REST answer): mark that key's unexplained
    # reconciliation rows as explained by the answer.
    explanations: list[tuple[str, str, int]] = field(default_factory=list)
    # Ledger answers folded (event ids): wallet reconciliations before them may now be
    # explained by ledger rows (writing.explain_by_ledgers).
    ledger_answers: list[int] = field(default_factory=list)

    def explain(self, projection: str, key: str, event_id: int) -> None:
        self.explanations.append((projection, key, event_id))

    def _fits(self, table: str, key: tuple[Any, ...], row: dict[str, Any]) -> bool:
        check = check_named(table)
        problem = check.problem(row) if check is not None else None
        if problem is None:
            return True
        assert check is not None
        found = check.finding(key, row, problem)
        self.unfit[(table, found.event_id, found.key)] = found
        return False

    def upsert(self, table: str, key: tuple[Any, ...], row: dict[str, Any] | None) -> None:
        if row is None and not storable_key(key):
            return  # no table holds such a row (it was a finding): nothing to delete
        if row is not None and not self._fits(table, key, row):
            return
        self.upserts.setdefault(table, {})[key] = row
        self.inserts_if_absent.get(table, {}).pop(key, None)
        self.confirms.get(table, {}).pop(key, None)
        self.finals.get(table, {}).pop(key, None)

    def confirm_final(self, table: str, key: tuple[Any, ...], row: dict[str, Any]) -> None:
        """A REST history row, the entity's final state, for an entity a frame may already
        have closed: its values win where it has them; the stored ``event_id`` stays when the
        row changes nothing (the frame set it all), else it becomes the answer's; and
        ``confirmed_by`` names the answer either way (provenance, audit issue)."""
        pending = self.upserts.get(table, {}).get(key)
        if pending is not None:
            self.upsert(table, key, final_merge(pending, row))
            return
        earlier = self.finals.get(table, {}).get(key)
        if earlier is not None:
            row = final_merge(earlier, row)
        if self._fits(table, key, row):
            self.finals.setdefault(table, {})[key] = row

    def confirm(self, table: str, key: tuple[Any, ...], row: dict[str, Any]) -> None:
        """A REST row that repeats what a frame may have set: stored (or pending) values and
        ``event_id`` are kept, NULLs filled, ``confirmed_by`` names ``row['event_id']``."""
        pending = self.upserts.get(table, {}).get(key) or self.inserts_if_absent.get(table, {}).get(
            key
        )
        # (a second answer in one batch: the first one's row stays, as in the database)
        earlier = pending if pending is not None else self.confirms.get(table, {}).get(key)
        if earlier is not None:
            merged = {k: (v if v is not None else row.get(k)) for k, v in earlier.items()}
            merged["confirmed_by"] = row["event_id"]
            if pending is not None:
                self.upsert(table, key, merged)
                return
            row = merged
        if self._fits(table, key, row):
            self.confirms.setdefault(table, {})[key] = row

    def insert_if_absent(self, table: str, key: tuple[Any, ...], row: dict[str, Any]) -> None:
        if key in self.upserts.get(table, {}):
            return  # a later or earlier full update already covers this row
        if not self._fits(table, key, row):
            return
        self.inserts_if_absent.setdefault(table, {}).setdefault(key, row)

    def clear(self) -> None:
        self.upserts.clear()
        self.inserts_if_absent.clear()
        self.confirms.clear()
        self.finals.clear()
        self.reconciliations.clear()
        self.explanations.clear()
        self.ledger_answers.clear()
        self.unfit.clear()


class FoldFlags(NamedTuple):
    """What a fold persists beside its checkpoint (``projector_checkpoints``). A named tuple:
    the live pool takes every fold's flags at every step (a frozen dataclass cost 1 us per
    instance)."""

    stale: bool = False  # a disconnect was folded and no snapshot since
    synced: bool = False  # has folded a snapshot (later ones are reconciled)
    skipped: int = 0  # events of its kinds it could not read


@dataclass(frozen=True)
class RestoreFrom:
    """Which stored rows of its own table a fold rebuilds its in-memory state from, as
    plain data (the runner turns it into a query; folds do no I/O).

    ``equal``/``not_equal``: column conditions (``is_open = true``, ``status != 'CLOSED'``);
    ``latest_row``: only the row with the largest ``event_id`` at or before the checkpoint
    (state snapshots)."""

    equal: tuple[tuple[str, Any], ...] = ()
    not_equal: tuple[tuple[str, Any], ...] = ()
    latest_row: bool = False
    # Other projections' tables read whole as well (their rows carry ``_table``); usable
    # only while those projections stand at the fold's own position (else no rows at all).
    also: tuple[str, ...] = ()


class Fold(Protocol):
    name: str  # the projector's name: its table's name
    kinds: frozenset[str]  # event kinds it reads

    @property
    def restore_from(self) -> RestoreFrom | None: ...  # None: nothing to restore from rows

    def apply(self, event: Event, out: Output) -> None: ...

    def snapshot(self) -> FoldFlags: ...

    def restore(self, rows: list[dict[str, Any]], flags: FoldFlags, checkpoint: int) -> int:
        """Take back the state kept at ``checkpoint`` (``rows`` as ``restore_from`` asked);
        returns the position from which the events up to ``checkpoint`` must be folded
        again to complete it (``checkpoint`` when the rows are the whole state)."""
        ...
