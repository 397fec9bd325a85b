"""Folds for append-only facts and latest values: trades, funding trades, notifications,
balance info (``bu``), margin info (``miu``), funding info (``fiu``)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from recorder.projections.base import Event, FoldFlags, Output, RestoreFrom
from recorder.projections.values import to_row
from recorder.protocol import layouts as L
from recorder.protocol.layouts import Layout
from recorder.protocol.ledger import category


def frame_payload(event: Event) -> Any:
    """The record of an account frame ``[0, kind, record]`` (None for any other shape)."""
    frame = event.payload
    return frame[2] if isinstance(frame, list) and len(frame) > 2 else None


class _RowsOnly:
    """A fold whose only state is its skipped count: its rows are never read back."""

    restore_from: RestoreFrom | None = None
    skipped: int

    def snapshot(self) -> FoldFlags:
        return FoldFlags(skipped=self.skipped)

    def restore(self, rows: list[dict[str, Any]], flags: FoldFlags, checkpoint: int) -> int:
        self.skipped = flags.skipped
        return checkpoint


class TradeFold(_RowsOnly):
    """``te`` creates the trade (fee unknown); ``tu`` completes it with the fee. A ``tu``
    without a ``te`` makes a full row; a ``te`` after its ``tu`` changes nothing. Values a
    shorter ``tu`` lacks (11-element ``tu`` has no ``cid``) keep what ``te`` gave."""

    def __init__(
        self, name: str, layout: Layout, executed: str, updated: str, history: str
    ) -> None:
        self.name = name
        self.layout = layout
        self.executed = executed
        self.history = history  # a REST answer: rows as complete as ``tu`` (fee included)
        self.kinds = frozenset({executed, updated, history})
        self.skipped = 0

    def apply(self, event: Event, out: Output) -> None:
        if event.kind == self.history:
            rows = event.payload
            if not isinstance(rows, list):
                self.skipped += 1
                return
            for array in rows:
                if isinstance(array, list) and array:
                    self._apply(event, array, out, complete=True)
            return
        array = frame_payload(event)
        if not isinstance(array, list) or not array:
            self.skipped += 1
            return
        self._apply(event, array, out, complete=event.kind != self.executed)

    def _apply(self, event: Event, array: list[Any], out: Output, *, complete: bool) -> None:
        row = {**to_row(self.layout, array), "event_id": event.id}
        key = (row["id"],)
        if not complete:
            out.insert_if_absent(self.name, key, row)
            return
        if event.kind == self.history:
            # Provenance: a REST row repeating a trade the socket gave keeps the frame's
            # event_id and values, fills what the frame lacked, and is named in confirmed_by.
            out.confirm(self.name, key, {**row, "confirmed_by": None})
            return
        pending = (
            out.upserts.get(self.name, {}).get(key)
            or out.inserts_if_absent.get(self.name, {}).get(key)
            or out.confirms.get(self.name, {}).get(key)
        )
        if pending:
            row = {k: (v if v is not None else pending.get(k)) for k, v in row.items()}
        out.upsert(self.name, key, row)


class NotificationFold(_RowsOnly):
    name = "notifications"
    kinds = frozenset({"n"})

    def __init__(self) -> None:
        self.skipped = 0

    def apply(self, event: Event, out: Output) -> None:
        array = frame_payload(event)
        if not isinstance(array, list):
            self.skipped += 1
            return
        row = to_row(L.NOTIFICATION, array)
        out.upsert(self.name, (event.id,), {**row, "event_id": event.id})


class LedgerFold(_RowsOnly):
    """``rest.ledgers-hist`` rows into ``ledgers``, by id (a repeated row changes nothing).
    The wallet is index 2 when it is a string, else the ``on wallet X`` suffix of the
    description (rest.md §3.4)."""

    name = "ledgers"
    kinds = frozenset({"rest.ledgers-hist"})

    def __init__(self) -> None:
        self.skipped = 0

    def apply(self, event: Event, out: Output) -> None:
        if not isinstance(event.payload, list):
            self.skipped += 1
            return
        for row in ledger_rows(event.payload):
            # The first answer that carried an entry keeps it (a repeat changes nothing).
            row["category"] = category(row["description"])
            out.insert_if_absent(self.name, (row["id"],), {**row, "event_id": event.id})


class MovementFold(_RowsOnly):
    """``rest.movements-hist`` rows into ``movements``, by id: deposits and withdrawals (no
    socket record exists). A later answer's row replaces an earlier one's (the status moves
    on); a row repeating the stored one keeps its ``event_id``, as for the history answers
    of the other tables."""

    name = "movements"
    kinds = frozenset({"rest.movements-hist"})

    def __init__(self) -> None:
        self.skipped = 0

    def apply(self, event: Event, out: Output) -> None:
        rows = event.payload
        if not isinstance(rows, list):
            self.skipped += 1
            return
        for array in rows:
            if not isinstance(array, list) or not array:
                self.skipped += 1
                continue
            row = to_row(L.MOVEMENT, array)
            if row["id"] is None:
                self.skipped += 1
                continue
            out.confirm_final(self.name, (row["id"],), {**row, "event_id": event.id})


class WalletHistoryFold(_RowsOnly):
    """``wallet_history``: one row per balance change of each wallet: every wallet of a
    ``ws`` snapshot, every ``wu``, and every REST ledger entry (by its ledger id, so an entry
    fetched twice is one row). ``at`` is the exchange's time where the record carries it
    (ledger entries), else when the frame was received. ``source``/``ref`` say where a row
    comes from (``ws``/``wu`` and the event id, or ``ledger`` and the ledger id)."""

    name = "wallet_history"
    kinds = frozenset({"ws", "wu", "rest.ledgers-hist"})

    def __init__(self) -> None:
        self.skipped = 0

    def apply(self, event: Event, out: Output) -> None:
        if event.kind == "rest.ledgers-hist":
            for row in ledger_rows(event.payload):
                if row["wallet"] is None:
                    continue
                out.upsert(
                    self.name,
                    (row["wallet"], row["currency"], "ledger", row["id"]),
                    {
                        "wallet_type": row["wallet"],
                        "currency": row["currency"],
                        "source": "ledger",
                        "ref": row["id"],
                        "at": row["mts"],
                        "balance": row["balance"],
                        "unsettled_interest": None,
                        "available_balance": None,
                        "description": row["description"],
                        "event_id": event.id,
                    },
                )
            return
        payload = frame_payload(event)
        records = payload if event.kind == "ws" else [payload]
        if not isinstance(records, list) or not all(isinstance(r, list) for r in records):
            self.skipped += 1
            return
        for array in records:
            wallet = to_row(L.WALLET, array)
            key = (wallet["wallet_type"], wallet["currency"], event.kind, event.id)
            out.upsert(
                self.name,
                key,
                {
                    "wallet_type": wallet["wallet_type"],
                    "currency": wallet["currency"],
                    "source": event.kind,
                    "ref": event.id,
                    "at": event.received_at,
                    "balance": wallet["balance"],
                    "unsettled_interest": wallet["unsettled_interest"],
                    "available_balance": wallet["available_balance"],
                    "description": wallet["last_change"],
                    "event_id": event.id,
                },
            )


def ledger_rows(rows: Any) -> list[dict[str, Any]]:
    """REST ledger rows as named values, the wallet from index 2 when it is a string, else
    from the ``on wallet X`` suffix of the description (rest.md §3.4)."""
    out = []
    for array in rows if isinstance(rows, list) else []:
        if not isinstance(array, list) or not array:
            continue
        row = to_row(L.LEDGER, array)
        if row["id"] is None:
            continue
        if not row["wallet"]:
            text = row["description"] or ""
            _, found, wallet = text.rpartition(" on wallet ")
            row["wallet"] = (wallet.strip() or None) if found else None
        out.append(row)
    return out


class BackfillFold:
    """``backfills``: one row per window, from its start and end markers. Windows of an
    account run one at a time, so an end marker closes the last window started; that window
    (``complete`` still NULL) is the fold's only state."""

    name = "backfills"
    kinds = frozenset({"recorder.backfill-start", "recorder.backfill-end"})
    restore_from = RestoreFrom(equal=(("complete", None),))

    def __init__(self) -> None:
        self.running: dict[str, Any] | None = None
        self.skipped = 0

    def snapshot(self) -> FoldFlags:
        return FoldFlags(skipped=self.skipped)

    def restore(self, rows: list[dict[str, Any]], flags: FoldFlags, checkpoint: int) -> int:
        latest = max(rows, key=lambda r: r["id"], default=None)
        self.running = (
            {c: latest[c] for c in ("id", "session_id", "reason", "window_from", "window_to")}
            if latest
            else None
        )
        self.skipped = flags.skipped
        return checkpoint

    def apply(self, event: Event, out: Output) -> None:
        marker = event.payload
        if not isinstance(marker, dict):
            self.skipped += 1
            return
        if event.kind == "recorder.backfill-start":
            session = marker.get("session_id")
            self.running = {
                "id": event.id,
                "session_id": session if isinstance(session, int) else None,
                "reason": marker.get("reason"),
                "window_from": _iso(marker.get("window_from")),
                "window_to": _iso(marker.get("window_to")),
            }
            row = {**self.running, "complete": None, "requests": None, "rows": None}
        elif self.running is not None:
            row = {
                **self.running,
                "complete": marker.get("complete") is True,
                "requests": _count(marker.get("requests")),
                "rows": _count(marker.get("rows")),
            }
            self.running = None
        else:
            self.skipped += 1  # an end without its start
            return
        out.upsert(self.name, (row["id"],), {**row, "event_id": event.id})


def _iso(value: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return None


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


Built = tuple[tuple[Any, ...], dict[str, Any]]  # (key, row)


class LatestFold(_RowsOnly):
    """Latest-value records: ``bu`` (one per account), ``miu`` (base, and one per symbol),
    ``fiu`` (one per funding symbol). ``build`` turns a payload into (key, row), or None
    when it cannot read it."""

    def __init__(self, name: str, kind: str, build: Callable[[Any], Built | None]) -> None:
        self.name = name
        self.kinds = frozenset({kind})
        self.build = build
        self.skipped = 0

    def apply(self, event: Event, out: Output) -> None:
        payload = frame_payload(event)
        built = self.build(payload) if isinstance(payload, list) else None
        if built is None:
            self.skipped += 1
            return
        key, row = built
        row["event_id"] = event.id
        out.upsert(self.name, key, row)


def balance_info_row(payload: list[Any]) -> Built | None:
    return (), to_row(L.BALANCE_INFO, payload)


_MARGIN_EMPTY = {f.name: None for f in (*L.MARGIN_INFO_BASE.fields, *L.MARGIN_INFO_SYM.fields)}


def margin_info_row(payload: list[Any]) -> Built | None:
    """``["base", [...]]`` keyed ``base``; ``["sym", SYMBOL, [...]]`` keyed by the symbol."""
    tag = payload[0] if payload else None
    if tag == "base" and len(payload) > 1 and isinstance(payload[1], list):
        row = {**_MARGIN_EMPTY, **to_row(L.MARGIN_INFO_BASE, payload[1])}
        return ("base",), {"margin_key": "base", "type": "base", "symbol": None, **row}
    if tag == "sym" and len(payload) > 2 and isinstance(payload[2], list):
        sym = str(payload[1])
        row = {**_MARGIN_EMPTY, **to_row(L.MARGIN_INFO_SYM, payload[2])}
        return (sym,), {"margin_key": sym, "type": "sym", "symbol": sym, **row}
    return None


def funding_info_row(payload: list[Any]) -> Built | None:
    if payload and payload[0] == "sym" and len(payload) > 2 and isinstance(payload[2], list):
        sym = str(payload[1])
        return (sym,), {"symbol": sym, **to_row(L.FUNDING_INFO, payload[2])}
    return None


EVENT_FOLDS: dict[str, Callable[[], Any]] = {
    "trades": lambda: TradeFold("trades", L.TRADE, "te", "tu", "rest.trades-hist"),
    "funding_trades": lambda: TradeFold(
        "funding_trades", L.FUNDING_TRADE, "fte", "ftu", "rest.funding-trades-hist"
    ),
    "ledgers": lambda: LedgerFold(),
    "movements": MovementFold,
    "wallet_history": lambda: WalletHistoryFold(),
    "backfills": lambda: BackfillFold(),
    "notifications": NotificationFold,
    "balance_info": lambda: LatestFold("balance_info", "bu", balance_info_row),
    "margin_info": lambda: LatestFold("margin_info", "miu", margin_info_row),
    "funding_info": lambda: LatestFold("funding_info", "fiu", funding_info_row),
}
