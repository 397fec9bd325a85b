"""Folds for keyed collections that snapshots replace: orders, positions, wallets, funding
offers, credits and loans.

Semantics (protocol.md §6, §8):

* a snapshot (``os``, ``ps``, ``ws``, ``fos``, ``fcs``, ``fls``) is the whole open set: first
  it is compared with the folded set (one :class:`Reconciliation` per difference, once the
  projection has seen a snapshot before), then entities absent from it are closed (orders,
  offers, credits, loans: ``is_open`` false; positions: status ``CLOSED``; wallets: the row is
  removed) and the snapshot's entities become the open set;
* new/update messages create or update the entity (an update for an unknown key creates it:
  ``oc`` can come without ``on``);
* close messages (``oc``, ``pc``, ``foc``, ``fcc``, ``flc``) write the entity's final state
  and take it out of the open set;
* ``recorder.disconnected`` makes the projection stale until its next snapshot.

The state kept in memory is the open set only; closed rows are written and forgotten.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from recorder.projections.base import (
    DISCONNECTED,
    Event,
    FoldFlags,
    Output,
    Reconciliation,
    RestoreFrom,
)
from recorder.projections.values import jsonable, to_row
from recorder.protocol import layouts as L
from recorder.protocol.layouts import Layout

Row = dict[str, Any]
Key = tuple[Any, ...]

LEDGER_ANSWER = "rest.ledgers-hist"
# Columns that are not values of the entity and so never count as a difference.
_META = frozenset({"account", "event_id", "is_open", "position_key"})


class CollectionFold:
    def __init__(
        self,
        name: str,
        layout: Layout,
        *,
        snapshot: str,
        upserts: tuple[str, ...],
        closes: tuple[str, ...],
        key: Callable[[Row], Key],
        open_flag: bool = True,
        close_row: Callable[[Row], Row] | None = None,
        keep_known: tuple[str, ...] = (),
        closed_when: tuple[str, Any] | None = None,
        key_columns: tuple[str, ...] = (),
        restore_from: RestoreFrom | None = None,
        rest_final: tuple[str, ...] = (),
        rest_current: tuple[str, ...] = (),
        ledger_explains: bool = False,
    ) -> None:
        self.name = name
        self.layout = layout
        self.snapshot_kind = snapshot
        self.upsert_kinds = frozenset(upserts)
        self.close_kinds = frozenset(closes)
        # REST answers (a JSON array of rows): history rows are final states and are applied
        # (closed orders with their real status, CLOSED positions, ...); current-state rows
        # change nothing. Both explain the reconciliation rows of the keys they carry (an
        # order opened in the gap is known only from the current orders), except for
        # wallets: a balance repeated explains nothing; ledger rows do (explaining.py).
        self.rest_final = frozenset(rest_final)
        self.rest_current = frozenset(rest_current)
        # Wallets: a ledger answer may explain earlier reconciliations (explaining.py).
        self.ledger_kind = LEDGER_ANSWER if ledger_explains else None
        self.kinds = frozenset(
            {snapshot, *upserts, *closes, *rest_final, *rest_current, DISCONNECTED}
            | ({LEDGER_ANSWER} if ledger_explains else set())
        )
        self.key = key
        self.open_flag = open_flag  # the table has an is_open column
        self.close_row = close_row  # how an entity missing from a snapshot is closed
        self.keep_known = keep_known  # columns where null means "unknown", not "none"
        self.closed_when = closed_when  # (column, value) of an update that ends the entity
        # The columns of its in-memory rows: the fields, the flag and any derived key column.
        self.columns = (*layout.names, *(["is_open"] if open_flag else []), *key_columns)
        # Its state is its open set: the open rows of its table (by default those flagged).
        self.restore_from = restore_from or RestoreFrom(equal=(("is_open", True),))
        self.open: dict[Key, Row] = {}
        # The last snapshot's records, by their JSON text -> the row made of each: a snapshot
        # repeats most records of the one before (every open order, credit, ... at every
        # reconnect), and converting them again was a tenth of a rebuild.
        self._seen: dict[bytes, tuple[Any, Row]] = {}
        self.stale = False
        self.synced = False
        self.skipped = 0

    # --- building rows ------------------------------------------------------------------------

    def _row(self, array: Any, is_open: bool) -> Row | None:
        if not isinstance(array, list):
            return None
        row = to_row(self.layout, array)
        if self.open_flag:
            row["is_open"] = is_open
        return row

    def _snapshot_row(self, array: Any, seen: dict[bytes, tuple[Any, Row]]) -> Row | None:
        """:meth:`_row` of a snapshot's record, converted again only when the last snapshot
        had no record of the same JSON text (``to_row`` is a function of that text: orjson
        writes ``1`` and ``1.0`` apart; what it cannot write, a Decimal or a long integer,
        is converted each time). The row is shared with the open set: rows there are never
        changed in place."""
        try:
            text = orjson.dumps(array)
        except TypeError:
            return self._row(array, is_open=True)
        found = self._seen.get(text)
        # The same text and an equal array: orjson writes NaN and null alike, and NaN is
        # equal to nothing, so such a record is converted again.
        if found is not None and found[0] == array:
            row: Row | None = found[1]
        else:
            row = self._row(array, is_open=True)
        if row is not None:
            seen[text] = (array, row)
        return row

    def _merge_known(self, key: Key, row: Row) -> Row:
        """``row`` with the values it leaves unknown taken from the open row (a new dict
        then: ``row`` may be shared)."""
        old = self.open.get(key)
        if old is not None:
            for col in self.keep_known:
                if row.get(col) is None and old.get(col) is not None:
                    row = {**row, col: old[col]}
        return row

    def _write(self, out: Output, key: Key, row: Row | None, event_id: int) -> None:
        if row is not None:
            row = {**row, "event_id": event_id}
        out.upsert(self.name, key, row)

    # --- state -------------------------------------------------------------------------------

    def snapshot(self) -> FoldFlags:
        return FoldFlags(self.stale, self.synced, self.skipped)

    def restore(self, rows: list[Row], flags: FoldFlags, checkpoint: int) -> int:
        self.open = {}
        for stored in rows:
            row = {c: stored.get(c) for c in self.columns}
            self.open[self.key(row)] = row
        self.stale, self.synced, self.skipped = flags.stale, flags.synced, flags.skipped
        return checkpoint

    # --- folding ------------------------------------------------------------------------------

    def apply(self, event: Event, out: Output) -> None:
        kind = event.kind
        if kind == DISCONNECTED:
            self.stale = True
            return
        frame = event.payload
        if kind == self.ledger_kind:
            out.ledger_answers.append(event.id)
            return
        if kind in self.rest_final or kind in self.rest_current:
            self._rest(event, frame, out)
            return
        payload = frame[2] if isinstance(frame, list) and len(frame) > 2 else None
        if kind == self.snapshot_kind:
            if not isinstance(payload, list) or not all(isinstance(r, list) for r in payload):
                self.skipped += 1
                return
            self._snapshot(event, payload, out)
            return
        row = self._row(payload, is_open=kind in self.upsert_kinds)
        if row is None:
            self.skipped += 1
            return
        key = self.key(row)
        if kind in self.close_kinds:
            self.open.pop(key, None)
            self._write(out, key, row, event.id)
            return
        row = self._merge_known(key, row)
        if self.is_closed(row):
            self.open.pop(key, None)
        else:
            self.open[key] = row
        self._write(out, key, row, event.id)

    def _rest(self, event: Event, rows: Any, out: Output) -> None:
        if not isinstance(rows, list) or not all(isinstance(r, list) for r in rows):
            self.skipped += 1
            return
        final = event.kind in self.rest_final
        for array in rows:
            row = self._row(array, is_open=False)
            if row is None:
                continue
            key = self.key(row)
            if self.ledger_kind is None:
                out.explain(self.name, "/".join(map(str, key)), event.id)
            # A history row is the entity's final state, unless it says otherwise (a
            # positions audit row can be ACTIVE): then it only explains.
            if final and (self.closed_when is None or self.is_closed(row)):
                if self.open.pop(key, None) is not None:
                    self._write(out, key, row, event.id)  # the answer closes it: its own row
                else:
                    # Closed by a frame already (or never seen): the frame's event_id stays
                    # where the answer only repeats it; confirmed_by names the answer.
                    out.confirm_final(self.name, key, {**row, "event_id": event.id})

    def is_closed(self, row: Row) -> bool:
        """An update that says the entity is over (a ``pu`` with status CLOSED)."""
        return self.closed_when is not None and row.get(self.closed_when[0]) == self.closed_when[1]

    def _snapshot(self, event: Event, records: list[Any], out: Output) -> None:
        fresh: dict[Key, Row] = {}
        seen: dict[bytes, tuple[Any, Row]] = {}
        for array in records:
            row = self._snapshot_row(array, seen)
            if row is not None:
                key = self.key(row)
                fresh[key] = self._merge_known(key, row)
        if self.synced:
            self._reconcile(event, fresh, out)
        for key, row in self.open.items():
            if key not in fresh:
                closed = self.close_row(row) if self.close_row else None
                self._write(out, key, closed, event.id)
        for key, row in fresh.items():
            if self.open.get(key) != row:
                self._write(out, key, row, event.id)
        self.open = fresh
        self._seen = seen
        self.synced = True
        self.stale = False

    def _reconcile(self, event: Event, fresh: dict[Key, Row], out: Output) -> None:
        def finding(key: Key, problem: str, folded: Row | None, snap: Row | None) -> None:
            out.reconciliations.append(
                Reconciliation(
                    event.id,
                    self.name,
                    "/".join(map(str, key)),
                    problem,
                    jsonable(folded),
                    jsonable(snap),
                )
            )

        for key, row in self.open.items():
            if key not in fresh:
                finding(key, "unexpected", row, None)
        for key, snap in fresh.items():
            folded = self.open.get(key)
            if folded is None:
                finding(key, "missing", None, snap)
            elif folded != snap and any(  # (equal rows, the usual case, compared at C speed)
                folded.get(c) != v for c, v in snap.items() if c not in _META
            ):
                finding(key, "changed", folded, snap)


def _order_closed(row: Row) -> Row:
    return {**row, "is_open": False}


def _position_closed(row: Row) -> Row:
    return {**row, "status": "CLOSED"}


def position_key(row: Row) -> Key:
    """Position id when the frame has one, else the symbol (protocol.md §6.2, §8 item 7)."""
    pid = row.get("position_id")
    row["position_key"] = str(pid) if pid is not None else f"sym:{row.get('symbol')}"
    return (row["position_key"],)


_BY_ID: Callable[[Row], Key] = lambda r: (r.get("id"),)  # noqa: E731


def orders_fold() -> CollectionFold:
    return CollectionFold(
        "orders",
        L.ORDER,
        snapshot="os",
        upserts=("on", "ou"),
        closes=("oc",),
        key=_BY_ID,
        close_row=_order_closed,
        rest_final=("rest.orders-hist",),
        rest_current=("rest.orders",),
    )


def positions_fold() -> CollectionFold:
    return CollectionFold(
        "positions",
        L.POSITION,
        snapshot="ps",
        upserts=("pn", "pu"),
        closes=("pc",),
        key=position_key,
        open_flag=False,
        close_row=_position_closed,
        closed_when=("status", "CLOSED"),
        key_columns=("position_key",),
        restore_from=RestoreFrom(not_equal=(("status", "CLOSED"),)),
        rest_final=("rest.positions-hist", "rest.positions-audit"),
        rest_current=("rest.positions",),
    )


def wallets_fold() -> CollectionFold:
    return CollectionFold(
        "wallets",
        L.WALLET,
        snapshot="ws",
        upserts=("wu",),
        closes=(),
        key=lambda r: (r.get("wallet_type"), r.get("currency")),
        open_flag=False,
        close_row=None,  # a wallet absent from a snapshot is removed
        keep_known=("available_balance",),
        restore_from=RestoreFrom(),  # every stored wallet is current
        rest_current=("rest.wallets",),
        ledger_explains=True,
    )


def _funding_fold(name: str, layout: Layout, prefix: str) -> Callable[[], CollectionFold]:
    rest = "rest." + name.replace("_", "-")  # rest.funding-offers, ...

    def make() -> CollectionFold:
        return CollectionFold(
            name,
            layout,
            snapshot=f"{prefix}s",
            upserts=(f"{prefix}n", f"{prefix}u"),
            closes=(f"{prefix}c",),
            key=_BY_ID,
            close_row=_order_closed,
            rest_final=(f"{rest}-hist",),
            rest_current=(rest,),
        )

    return make


COLLECTION_FOLDS: dict[str, Callable[[], CollectionFold]] = {
    "orders": orders_fold,
    "positions": positions_fold,
    "wallets": wallets_fold,
    "funding_offers": _funding_fold("funding_offers", L.FUNDING_OFFER, "fo"),
    "funding_credits": _funding_fold("funding_credits", L.FUNDING_CREDIT, "fc"),
    "funding_loans": _funding_fold("funding_loans", L.FUNDING_LOAN, "fl"),
}
