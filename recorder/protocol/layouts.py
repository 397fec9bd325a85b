"""Field layouts (array index -> field name) of every chanId 0 record type, in one place.

The simulator builds its frames from these layouts, the projections read frames through them,
and the projection tables take their column names from them, so the three cannot disagree.
Indexes and names follow docs/protocol.md §6 (the official Python client's labels).
Reserved slots (``_PLACEHOLDER``) are not named but count towards :attr:`Layout.length`, the
full length the official client insists on.

Field kinds: ``int`` (ids, flags, small codes), ``dec`` (amounts, prices, rates: exact
decimals), ``text``, ``mts`` (exchange milliseconds, stored as a timestamp), ``json``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any


@dataclass(frozen=True)
class Field:
    index: int
    name: str
    kind: str


@dataclass(frozen=True)
class Layout:
    name: str
    fields: tuple[Field, ...]
    length: int

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)

    def record(self, array: Sequence[Any]) -> dict[str, Any]:
        """Name the values of ``array``; fields past its end are ``None`` (older, shorter
        arrays), values past the layout are ignored (newer, longer arrays)."""
        n = len(array)
        return {f.name: (array[f.index] if f.index < n else None) for f in self.fields}

    def array(self, values: dict[str, Any]) -> list[Any]:
        """The full-length array for named values; unnamed and missing slots are ``null``."""
        out: list[Any] = [None] * self.length
        for f in self.fields:
            out[f.index] = values.get(f.name)
        return out


def _layout(name: str, length: int, *spec: tuple[int, str, str]) -> Layout:
    return Layout(name, tuple(Field(i, n, k) for i, n, k in spec), length)


ORDER = _layout(
    "order",
    32,
    (0, "id", "int"),
    (1, "gid", "int"),
    (2, "cid", "int"),
    (3, "symbol", "text"),
    (4, "mts_create", "mts"),
    (5, "mts_update", "mts"),
    (6, "amount", "dec"),
    (7, "amount_orig", "dec"),
    (8, "order_type", "text"),
    (9, "type_prev", "text"),
    (10, "mts_tif", "mts"),
    (12, "flags", "int"),
    (13, "order_status", "text"),
    (16, "price", "dec"),
    (17, "price_avg", "dec"),
    (18, "price_trailing", "dec"),
    (19, "price_aux_limit", "dec"),
    (23, "notify", "int"),
    (24, "hidden", "int"),
    (25, "placed_id", "int"),
    (28, "routing", "text"),
    (31, "meta", "json"),
)

POSITION = _layout(
    "position",
    20,
    (0, "symbol", "text"),
    (1, "status", "text"),
    (2, "amount", "dec"),
    (3, "base_price", "dec"),
    (4, "margin_funding", "dec"),
    (5, "margin_funding_type", "int"),
    (6, "pl", "dec"),
    (7, "pl_perc", "dec"),
    (8, "price_liq", "dec"),
    (9, "leverage", "dec"),
    (11, "position_id", "int"),
    (12, "mts_create", "mts"),
    (13, "mts_update", "mts"),
    (15, "type", "int"),
    (17, "collateral", "dec"),
    (18, "collateral_min", "dec"),
    (19, "meta", "json"),
)

WALLET = _layout(
    "wallet",
    7,
    (0, "wallet_type", "text"),
    (1, "currency", "text"),
    (2, "balance", "dec"),
    (3, "unsettled_interest", "dec"),
    (4, "available_balance", "dec"),
    (5, "last_change", "text"),
    (6, "trade_details", "json"),
)

TRADE = _layout(
    "trade",
    12,
    (0, "id", "int"),
    (1, "symbol", "text"),
    (2, "mts_create", "mts"),
    (3, "order_id", "int"),
    (4, "exec_amount", "dec"),
    (5, "exec_price", "dec"),
    (6, "order_type", "text"),
    (7, "order_price", "dec"),
    (8, "maker", "int"),
    (9, "fee", "dec"),
    (10, "fee_currency", "text"),
    (11, "cid", "int"),
)

FUNDING_OFFER = _layout(
    "funding_offer",
    21,
    (0, "id", "int"),
    (1, "symbol", "text"),
    (2, "mts_create", "mts"),
    (3, "mts_update", "mts"),
    (4, "amount", "dec"),
    (5, "amount_orig", "dec"),
    (6, "offer_type", "text"),
    (9, "flags", "int"),
    (10, "offer_status", "text"),
    (14, "rate", "dec"),
    (15, "period", "int"),
    (16, "notify", "int"),
    (17, "hidden", "int"),
    (19, "renew", "int"),
    (20, "rate_real", "dec"),
)

_FUNDING_POSITION_FIELDS: tuple[tuple[int, str, str], ...] = (
    (0, "id", "int"),
    (1, "symbol", "text"),
    (2, "side", "int"),
    (3, "mts_create", "mts"),
    (4, "mts_update", "mts"),
    (5, "amount", "dec"),
    (6, "flags", "int"),
    (7, "status", "text"),
    (8, "rate_type", "text"),
    (11, "rate", "dec"),
    (12, "period", "int"),
    (13, "mts_opening", "mts"),
    (14, "mts_last_payout", "mts"),
    (15, "notify", "int"),
    (16, "hidden", "int"),
    (18, "renew", "int"),
    (19, "rate_real", "dec"),
    (20, "no_close", "int"),
)

FUNDING_CREDIT = _layout(
    "funding_credit", 22, *_FUNDING_POSITION_FIELDS, (21, "position_pair", "text")
)
FUNDING_LOAN = _layout("funding_loan", 21, *_FUNDING_POSITION_FIELDS)

FUNDING_TRADE = _layout(
    "funding_trade",
    8,
    (0, "id", "int"),
    (1, "symbol", "text"),
    (2, "mts_create", "mts"),
    (3, "offer_id", "int"),
    (4, "amount", "dec"),
    (5, "rate", "dec"),
    (6, "period", "int"),
    (7, "maker", "int"),
)

# REST ledger entries (rest.md §3.4): index 2 is documented as the wallet but real answers
# carry null there; the wallet then ends the description ("... on wallet exchange").
LEDGER = _layout(
    "ledger",
    9,
    (0, "id", "int"),
    (1, "currency", "text"),
    (2, "wallet", "text"),
    (3, "mts", "mts"),
    (5, "amount", "dec"),
    (6, "balance", "dec"),
    (8, "description", "text"),
)

# REST movements (rest.md §3.7): deposits and withdrawals; other slots are placeholders.
MOVEMENT = _layout(
    "movement",
    22,
    (0, "id", "int"),
    (1, "currency", "text"),
    (2, "currency_name", "text"),
    (5, "mts_started", "mts"),
    (6, "mts_updated", "mts"),
    (9, "status", "text"),
    (12, "amount", "dec"),
    (13, "fees", "dec"),
    (16, "address", "text"),
    (17, "payment_id", "text"),
    (20, "transaction_id", "text"),
    (21, "note", "text"),
)

BALANCE_INFO = _layout("balance_info", 2, (0, "aum", "dec"), (1, "aum_net", "dec"))

# miu/fiu carry a variant tag and (for sym) a symbol before the value array; these layouts
# describe the inner value array.
MARGIN_INFO_BASE = _layout(
    "margin_info_base",
    5,
    (0, "user_pl", "dec"),
    (1, "user_swaps", "dec"),
    (2, "margin_balance", "dec"),
    (3, "margin_net", "dec"),
    (4, "margin_min", "dec"),
)
MARGIN_INFO_SYM = _layout(
    "margin_info_sym",
    8,
    (0, "tradable_balance", "dec"),
    (1, "gross_balance", "dec"),
    (2, "buy", "dec"),
    (3, "sell", "dec"),
)
FUNDING_INFO = _layout(
    "funding_info",
    4,
    (0, "yield_loan", "dec"),
    (1, "yield_lend", "dec"),
    (2, "duration_loan", "dec"),
    (3, "duration_lend", "dec"),
)

NOTIFICATION = _layout(
    "notification",
    8,
    (0, "mts", "mts"),
    (1, "type", "text"),
    (2, "message_id", "int"),
    (4, "data", "json"),
    (5, "code", "int"),
    (6, "status", "text"),
    (7, "text", "text"),
)


class Role(Enum):
    SNAPSHOT = "snapshot"  # replaces the account's whole collection
    UPSERT = "upsert"  # creates or updates one entity
    CLOSE = "close"  # the entity's terminal update
    EVENT = "event"  # append-only fact (trades, notifications)
    LATEST = "latest"  # latest-value record (bu, miu, fiu)


@dataclass(frozen=True)
class MessageType:
    abbr: str
    layout: Layout
    role: Role
    collection: str  # the projection the message belongs to


def _types() -> dict[str, MessageType]:
    out: dict[str, MessageType] = {}

    def family(collection: str, layout: Layout, snap: str, new: str, upd: str, close: str) -> None:
        out[snap] = MessageType(snap, layout, Role.SNAPSHOT, collection)
        out[new] = MessageType(new, layout, Role.UPSERT, collection)
        out[upd] = MessageType(upd, layout, Role.UPSERT, collection)
        out[close] = MessageType(close, layout, Role.CLOSE, collection)

    family("orders", ORDER, "os", "on", "ou", "oc")
    family("positions", POSITION, "ps", "pn", "pu", "pc")
    family("funding_offers", FUNDING_OFFER, "fos", "fon", "fou", "foc")
    family("funding_credits", FUNDING_CREDIT, "fcs", "fcn", "fcu", "fcc")
    family("funding_loans", FUNDING_LOAN, "fls", "fln", "flu", "flc")
    out["ws"] = MessageType("ws", WALLET, Role.SNAPSHOT, "wallets")
    out["wu"] = MessageType("wu", WALLET, Role.UPSERT, "wallets")
    out["te"] = MessageType("te", TRADE, Role.EVENT, "trades")
    out["tu"] = MessageType("tu", TRADE, Role.EVENT, "trades")
    out["fte"] = MessageType("fte", FUNDING_TRADE, Role.EVENT, "funding_trades")
    out["ftu"] = MessageType("ftu", FUNDING_TRADE, Role.EVENT, "funding_trades")
    out["bu"] = MessageType("bu", BALANCE_INFO, Role.LATEST, "balance_info")
    out["miu"] = MessageType("miu", MARGIN_INFO_BASE, Role.LATEST, "margin_info")
    out["fiu"] = MessageType("fiu", FUNDING_INFO, Role.LATEST, "funding_info")
    out["n"] = MessageType("n", NOTIFICATION, Role.EVENT, "notifications")
    return out


MESSAGE_TYPES: dict[str, MessageType] = _types()
