"""Folds for append-only facts and latest values: trades, funding trades, notifications,
balance info (``bu``), margin info (``miu``), funding info (``fiu``)."""

from __future__ import annotations

from typing import Any

from recorder.projections.base import Event, Output
from recorder.projections.values import to_row
from recorder.protocol import layouts as L
from recorder.protocol.layouts import Layout


def _payload(event: Event) -> Any:
    frame = event.payload
    return frame[2] if isinstance(frame, list) and len(frame) > 2 else None


class TradeFold:
    """``te`` creates the trade (fee unknown); ``tu`` completes it with the fee. A ``tu``
    without a ``te`` makes a full row; a ``te`` after its ``tu`` changes nothing. Values a
    shorter ``tu`` lacks (11-element ``tu`` has no ``cid``) keep what ``te`` gave."""

    stale = False
    synced = False

    def __init__(self, name: str, layout: Layout, executed: str, updated: str) -> None:
        self.name = name
        self.layout = layout
        self.executed = executed
        self.kinds = frozenset({executed, updated})
        self.skipped = 0

    def apply(self, event: Event, out: Output) -> None:
        array = _payload(event)
        if not isinstance(array, list) or not array:
            self.skipped += 1
            return
        row = {**to_row(self.layout, array), "event_id": event.id}
        key = (row["id"],)
        if event.kind == self.executed:
            out.insert_if_absent(self.name, key, row)
            return
        pending = out.upserts.get(self.name, {}).get(key) or out.inserts_if_absent.get(
            self.name, {}
        ).get(key)
        if pending:
            row = {k: (v if v is not None else pending.get(k)) for k, v in row.items()}
        out.upsert(self.name, key, row)


class NotificationFold:
    name = "notifications"
    kinds = frozenset({"n"})
    stale = False
    synced = False

    def __init__(self) -> None:
        self.skipped = 0

    def apply(self, event: Event, out: Output) -> None:
        array = _payload(event)
        if not isinstance(array, list):
            self.skipped += 1
            return
        row = to_row(L.NOTIFICATION, array)
        out.upsert(self.name, (event.id,), {**row, "event_id": event.id})


class LatestFold:
    """Latest-value records: ``bu`` (one per account), ``miu`` (base, and one per symbol),
    ``fiu`` (one per funding symbol)."""

    stale = False
    synced = False

    def __init__(self, name: str, kind: str) -> None:
        self.name = name
        self.kinds = frozenset({kind})
        self.skipped = 0
        self.latest: dict[tuple[Any, ...], dict[str, Any]] = {}

    def apply(self, event: Event, out: Output) -> None:
        built = self._build(_payload(event))
        if built is None:
            self.skipped += 1
            return
        key, row = built
        row["event_id"] = event.id
        self.latest[key] = row
        out.upsert(self.name, key, row)

    def _build(self, payload: Any) -> tuple[tuple[Any, ...], dict[str, Any]] | None:
        if not isinstance(payload, list):
            return None
        if self.name == "balance_info":
            return (), to_row(L.BALANCE_INFO, payload)
        tag = payload[0] if payload else None
        if self.name == "margin_info":
            empty = {f.name: None for f in (*L.MARGIN_INFO_BASE.fields, *L.MARGIN_INFO_SYM.fields)}
            if tag == "base" and len(payload) > 1 and isinstance(payload[1], list):
                row = {**empty, **to_row(L.MARGIN_INFO_BASE, payload[1])}
                return ("base",), {"margin_key": "base", "type": "base", "symbol": None, **row}
            if tag == "sym" and len(payload) > 2 and isinstance(payload[2], list):
                sym = str(payload[1])
                row = {**empty, **to_row(L.MARGIN_INFO_SYM, payload[2])}
                return (sym,), {"margin_key": sym, "type": "sym", "symbol": sym, **row}
            return None
        if tag == "sym" and len(payload) > 2 and isinstance(payload[2], list):
            sym = str(payload[1])
            return (sym,), {"symbol": sym, **to_row(L.FUNDING_INFO, payload[2])}
        return None


def make_event_folds() -> list[Any]:
    return [
        TradeFold("trades", L.TRADE, "te", "tu"),
        TradeFold("funding_trades", L.FUNDING_TRADE, "fte", "ftu"),
        NotificationFold(),
        LatestFold("balance_info", "bu"),
        LatestFold("margin_info", "miu"),
        LatestFold("funding_info", "fiu"),
    ]
