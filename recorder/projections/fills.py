"""``fill_effects``: every fill tied to the balance changes it caused (audit.md §2).

Per trade (a ``tu`` frame, or a ``rest.trades-hist`` row), the effects it implies: an
exchange fill of ``A`` base at ``P`` moves the exchange wallets by base ``+A``, quote
``-A*P`` and the fee currency by the fee ``F`` (negative); a margin fill moves only the margin
wallet, by its fee. Each effect is one row, keyed (trade, wallet, currency, part), and says
what carries it:

* a ``wu`` frame after the ``tu`` whose META names the trade's order (and, when it carries
  them, the trade's amount and price), or a fee ``wu`` whose text names the fill
  (``Trading fees for A BASE (PAIR) @ P``), whose change (its balance minus that wallet's
  previous balance) equals the effect to the last digit: ``exact``, ``event_id`` = the ``wu``;
* a ledger row (``rest.ledgers-hist``) of the same wallet and currency whose amount equals
  the effect and whose description names the fill's amount and price: ``exact``,
  ``ledger_id`` set (``event_id`` = the answer, when no frame carried it);
* a fee ``wu`` without text or META equal to the last fill's fee, or ``wu`` changes of the
  order that add up to something else: ``inferred`` (only the order of frames supports it);
* nothing yet: ``missing``.

A funding trade (``fte``/``ftu``/``rest.funding-trades-hist``) moves no balance when it is
made; its effect is the interest of its term, ``|AMOUNT| x RATE x PERIOD`` (part
``interest``; positive on the funding wallet for funds provided, AMOUNT > 0; negative on the
margin wallet for funds taken), carried exactly by a ledger row of a funding payment (28) or
charge (27, 226) of that amount in that currency. Bitfinex pays interest daily and sums the
payments of all terms of a currency into one row: where it did, no single row equals one
trade's interest and the effect stays ``missing`` (the honest answer: the ledger does not
show which term earned what).

A quote amount ``A*P`` with more than 8 decimals is compared as the exchange settles it
(rounded to 8 decimals, half-even or half-up). Amounts are Decimals throughout.

State (pure, restorable): each wallet's balance (from ``ws``/``wu``; restored from the
``wallets`` table when it stands at the same position, else the log is folded again), the
recent live fills still waiting for their ``wu`` (the last :data:`PENDING_TRADES` trades), the
effects without a ledger row (the latest :data:`AWAITING_LEDGER`), the trades and ledger ids
already used; all but the balances restored from this table's rows. (A split ``wu`` whose
parts straddle a restart is the one thing not restored: its effect stays ``inferred``.)
"""

from __future__ import annotations

import heapq
import itertools
from collections import OrderedDict
from decimal import ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from recorder.projections.base import DISCONNECTED, Event, FoldFlags, Output, RestoreFrom
from recorder.projections.events import frame_payload, ledger_rows
from recorder.projections.idset import IdSet
from recorder.projections.values import to_row
from recorder.protocol import layouts as L
from recorder.protocol.ledger import FillText, category, fill_text

NAME = "fill_effects"
PENDING_TRADES = 64  # live trades whose wu frames may still come
# Effects kept in memory until a ledger row carries them, per account (about 1.2 KB each):
# the ledger answer asked for after each fill, or a gap's backfill, comes long before
# 10,000 more effects in all but the busiest accounts; without the backfill none ever comes,
# and 100,000 held 117 MB per account (the 5,000,000-frame benchmark of 2026-12-04).
AWAITING_LEDGER = 10_000
_EIGHT = Decimal("1e-8")
# Ledger categories that carry a fill's parts, and a funding trade's interest.
FILL_CATEGORIES = frozenset({5, 201})
INTEREST_CATEGORIES = frozenset({27, 28, 226})
FUNDING_KINDS = frozenset({"fte", "ftu"})

Row = dict[str, Any]
Key = tuple[Any, ...]


class PendingFills:
    """The effect rows of the recent live fills still waiting for their ``wu`` frames, per
    trade, oldest trade first; and the same rows per wallet and currency, in that order.

    Why the second view: a ``wu`` only ever concerns its own wallet's rows, and once the
    window is full (fills whose ``wu`` never settles them stay until the window drops them)
    every ``wu`` scanned all 64 trades' rows: 13 % of the live projectors' time late in a
    5,000,000-frame burst. Rows are the fold's own dicts (changed in place as ``wu`` and ledger
    rows come); their wallet and currency never change."""

    def __init__(self) -> None:
        self.trades: OrderedDict[Any, list[Row]] = OrderedDict()
        self._by_wallet: dict[tuple[Any, Any], dict[int, Row]] = {}

    def __len__(self) -> int:
        return len(self.trades)

    def add(self, trade_id: Any, row: Row) -> None:
        """One more effect row of ``trade_id`` (a new trade goes last)."""
        self.trades.setdefault(trade_id, []).append(row)
        self._by_wallet.setdefault((row["wallet_type"], row["currency"]), {})[id(row)] = row

    def get(self, trade_id: Any) -> list[Row] | None:
        return self.trades.get(trade_id)

    def remove(self, trade_id: Any) -> None:
        self._drop(self.trades.pop(trade_id))

    def keep_last(self, n: int) -> None:
        """Forget the oldest trades past ``n``."""
        while len(self.trades) > n:
            self._drop(self.trades.popitem(last=False)[1])

    def _drop(self, rows: list[Row]) -> None:
        for row in rows:
            wkey = (row["wallet_type"], row["currency"])
            same = self._by_wallet[wkey]
            del same[id(row)]
            if not same:
                del self._by_wallet[wkey]

    def unsettled(self, wkey: tuple[Any, Any]) -> list[Row]:
        """The rows of wallet and currency ``wkey`` not yet carried exactly, oldest trade
        first."""
        same = self._by_wallet.get(wkey)
        if same is None:
            return []
        return [r for r in same.values() if r["attribution"] != "exact"]


def split_symbol(symbol: Any) -> tuple[str, str] | None:
    """``tBTCUSD`` -> (BTC, USD); ``tTESTBTC:TESTUSD`` -> (TESTBTC, TESTUSD)."""
    if not isinstance(symbol, str) or not symbol.startswith("t"):
        return None
    pair = symbol[1:]
    if ":" in pair:
        base, _, quote = pair.partition(":")
        return (base, quote) if base and quote else None
    return (pair[:3], pair[3:]) if len(pair) == 6 else None


def settles(delta: Decimal, expected: Decimal) -> bool:
    """Whether a balance change equals an effect to the last digit, as the exchange settles
    amounts (8 decimals)."""
    if delta == expected:
        return True
    exponent = expected.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -8:
        try:
            return delta in (
                expected.quantize(_EIGHT, ROUND_HALF_EVEN),
                expected.quantize(_EIGHT, ROUND_HALF_UP),
            )
        except InvalidOperation:
            return False
    return False


def _meta_decimal(meta: dict[str, Any], name: str) -> Decimal | None:
    value = meta.get(name)
    try:
        return Decimal(str(value)) if value is not None else None
    except InvalidOperation:
        return None


def _key(row: Row) -> Key:
    return (row["trade_id"], row["wallet_type"], row["currency"], row["part"])


class FillEffectsFold:
    name = NAME
    kinds = frozenset(
        {
            "tu",
            "rest.trades-hist",
            *FUNDING_KINDS,
            "rest.funding-trades-hist",
            "ws",
            "wu",
            "rest.ledgers-hist",
            DISCONNECTED,
        }
    )
    restore_from = RestoreFrom(also=("wallets",))

    def __init__(self) -> None:
        self.balances: dict[tuple[Any, Any], Decimal | None] = {}
        # The live fills still waiting for wu frames (the last PENDING_TRADES trades).
        self.pending = PendingFills()
        self.last_trade: Any = None  # the latest live trade (a bare fee wu may be its fee)
        # (wallet, currency, amount) -> effect rows without a ledger row, oldest first.
        self.awaiting: dict[tuple[Any, Any, Decimal], list[Row]] = {}
        self.awaiting_count = 0
        # The same rows by age, to forget the oldest past AWAITING_LEDGER without looking at
        # every one (a scan per fill made a fold past the bound crawl: 40 events/s). Entries
        # whose row found its ledger row stay until popped or compacted.
        self.by_age: list[tuple[Any, str, int, tuple[Any, Any, Decimal], Row]] = []
        self.arrivals = itertools.count()
        # Trades with effects already, and ledger rows already used (REST answers repeat
        # rows: a window overlaps the live period before a gap, windows overlap each other).
        # Funding trades are numbered apart from trades (their ids may meet), so they have a
        # set of their own (as ("funding", id) tuples they cost about 130 bytes each, not 8).
        self.known_trades = IdSet()
        self.known_funding_trades = IdSet()
        self.used_ledgers = IdSet()
        self.skipped = 0

    # --- state --------------------------------------------------------------------------------

    def snapshot(self) -> FoldFlags:
        return FoldFlags(skipped=self.skipped)

    def restore(self, rows: list[Row], flags: FoldFlags, checkpoint: int) -> int:
        self.__init__()  # type: ignore[misc]
        self.skipped = flags.skipped
        if not rows and checkpoint > 0:
            return 0  # no rows to take the state from: fold the log again from the start
        own = sorted(
            (r for r in rows if "_table" not in r),
            key=lambda r: (r["trade_event_id"], str(r["trade_id"]), r["part"]),
        )
        for stored in rows:
            if stored.get("_table") == "wallets":
                self.balances[(stored["wallet_type"], stored["currency"])] = stored["balance"]
        for stored in own:
            row = {k: v for k, v in stored.items() if k != "account"}
            self._known(row["part"]).add(row["trade_id"])
            if row["ledger_id"] is not None:
                self.used_ledgers.add(row["ledger_id"])
                continue
            self._await_ledger(row)
            if (
                row["source"] == "live"
                and row["attribution"] != "exact"
                and row["part"] != "interest"
            ):
                self.pending.add(row["trade_id"], row)
                self.last_trade = row["trade_id"]
        self.pending.keep_last(PENDING_TRADES)
        return checkpoint

    def _known(self, part: str) -> IdSet:
        """The ids already folded of an effect row's kind of trade (``part`` "interest": a
        funding trade's)."""
        return self.known_funding_trades if part == "interest" else self.known_trades

    # --- folding ------------------------------------------------------------------------------

    def apply(self, event: Event, out: Output) -> None:
        kind = event.kind
        if kind == DISCONNECTED:
            return
        payload = event.payload
        if kind == "tu":
            array = frame_payload(event)
            if not isinstance(array, list):
                self.skipped += 1
                return
            self._trade(event, array, "live", out)
        elif kind == "rest.trades-hist":
            if not isinstance(payload, list):
                self.skipped += 1
                return
            for array in payload:
                if isinstance(array, list) and array:
                    self._trade(event, array, "backfill", out)
        elif kind in FUNDING_KINDS:
            array = frame_payload(event)
            if not isinstance(array, list):
                self.skipped += 1
                return
            self._funding_trade(event, array, "live", out)
        elif kind == "rest.funding-trades-hist":
            if not isinstance(payload, list):
                self.skipped += 1
                return
            for array in payload:
                if isinstance(array, list) and array:
                    self._funding_trade(event, array, "backfill", out)
        elif kind == "ws":
            records = frame_payload(event)
            if not isinstance(records, list):
                self.skipped += 1
                return
            self.balances = {}
            for array in records:
                if isinstance(array, list):
                    w = to_row(L.WALLET, array)
                    self.balances[(w["wallet_type"], w["currency"])] = w["balance"]
        elif kind == "wu":
            array = frame_payload(event)
            if not isinstance(array, list):
                self.skipped += 1
                return
            self._wallet_update(event, array, out)
        else:
            self._ledger(event, payload, out)

    def _trade(self, event: Event, array: list[Any], source: str, out: Output) -> None:
        t = to_row(L.TRADE, array)
        pair = split_symbol(t["symbol"])
        amount, price = t["exec_amount"], t["exec_price"]
        if t["id"] is None or pair is None or amount is None or price is None:
            self.skipped += 1
            return
        if t["id"] in self.known_trades:
            return  # a fill seen before (the socket's, or a repeated REST row)
        self.known_trades.add(t["id"])
        base, quote = pair
        margin = isinstance(t["order_type"], str) and not t["order_type"].startswith("EXCHANGE")
        wallet = "margin" if margin else "exchange"
        common = {
            "trade_id": t["id"],
            "order_id": t["order_id"],
            "symbol": t["symbol"],
            "exec_amount": amount,
            "exec_price": price,
            "attribution": "missing",
            "event_id": None,
            "ledger_id": None,
            "source": source,
            "trade_event_id": event.id,
        }
        effects: list[Row] = []
        if not margin:
            effects.append(
                {
                    **common,
                    "wallet_type": wallet,
                    "currency": base,
                    "part": "base",
                    "amount": amount,
                }
            )
            effects.append(
                {
                    **common,
                    "wallet_type": wallet,
                    "currency": quote,
                    "part": "quote",
                    "amount": -(amount * price),
                }
            )
        fee, fee_ccy = t["fee"], t["fee_currency"]
        if fee is not None and fee != 0 and isinstance(fee_ccy, str):
            effects.append(
                {**common, "wallet_type": wallet, "currency": fee_ccy, "part": "fee", "amount": fee}
            )
        for row in effects:
            out.upsert(NAME, _key(row), row)
            self._await_ledger(row)
        if source == "live" and effects:
            for row in effects:
                self.pending.add(t["id"], row)
            self.last_trade = t["id"]
            self.pending.keep_last(PENDING_TRADES)

    def _funding_trade(self, event: Event, array: list[Any], source: str, out: Output) -> None:
        t = to_row(L.FUNDING_TRADE, array)
        symbol, amount, rate, period = t["symbol"], t["amount"], t["rate"], t["period"]
        if (
            t["id"] is None
            or not isinstance(symbol, str)
            or not symbol.startswith("f")
            or len(symbol) < 2
            or amount is None
            or rate is None
            or period is None
        ):
            self.skipped += 1
            return
        if t["id"] in self.known_funding_trades:
            return  # ftu after fte, or a repeated REST row
        self.known_funding_trades.add(t["id"])
        interest = abs(amount) * rate * period
        provided = amount > 0
        row: Row = {
            "trade_id": t["id"],
            "order_id": t["offer_id"],
            "symbol": symbol,
            "exec_amount": amount,
            "exec_price": rate,
            "attribution": "missing",
            "event_id": None,
            "ledger_id": None,
            "source": source,
            "trade_event_id": event.id,
            "wallet_type": "funding" if provided else "margin",
            "currency": symbol[1:],
            "part": "interest",
            "amount": interest if provided else -interest,
        }
        out.upsert(NAME, _key(row), row)
        self._await_ledger(row)

    def _wallet_update(self, event: Event, array: list[Any], out: Output) -> None:
        w = to_row(L.WALLET, array)
        wkey = (w["wallet_type"], w["currency"])
        before = self.balances.get(wkey)
        after = w["balance"]
        self.balances[wkey] = after
        if before is None or after is None:
            return
        delta = after - before
        if delta == 0:
            return
        meta = array[6] if len(array) > 6 and isinstance(array[6], dict) else None
        if meta is not None and meta.get("reason") == "TRADE":
            row = self._by_meta(wkey, meta)
        else:
            row = self._by_text(wkey, w["last_change"], delta)
        if row is None:
            return
        carried = row.get("_carried", Decimal(0)) + delta
        row["_carried"] = carried
        if row["event_id"] is None or row["attribution"] != "exact":
            row["event_id"] = event.id
        expected = row["amount"] if row["attribution"] != "exact" else carried
        if settles(carried, expected):
            row["attribution"] = "exact"
            row["amount"] = carried
            self._done_with(row)
        else:
            row["attribution"] = "inferred"
        out.upsert(NAME, _key(row), _plain(row))

    def _candidates(self, wkey: tuple[Any, Any]) -> list[Row]:
        return self.pending.unsettled(wkey)

    def _by_meta(self, wkey: tuple[Any, Any], meta: dict[str, Any]) -> Row | None:
        order = meta.get("order_id")
        t_amount, t_price = _meta_decimal(meta, "trade_amount"), _meta_decimal(meta, "trade_price")
        untouched = touched = None
        for r in self._candidates(wkey):
            if r["part"] == "fee" or r["order_id"] != order:
                continue
            if t_amount is not None and t_amount != r["exec_amount"]:
                continue
            if t_price is not None and t_price != r["exec_price"]:
                continue
            if r["event_id"] is None:
                untouched = untouched or r
            elif _partial(r.get("_carried"), r["amount"]):
                return r  # the first part of a split wu came: this is its remainder
            else:
                touched = touched or r
        # Two fills of one order with the same amount and price, the earlier one's change not
        # adding up (a frame missed): the wu goes to the fill no wu has touched yet, so the
        # result does not depend on a restart in between; else to the first one.
        return untouched or touched

    def _by_text(self, wkey: tuple[Any, Any], text: Any, delta: Decimal) -> Row | None:
        named = fill_text(text)
        fees = [r for r in self._candidates(wkey) if r["part"] == "fee"]
        if named is not None and named.fee:
            for r in fees:
                if _names(named, r):
                    return r
            return None
        # A bare change: only the latest fill's own fee, equal to the last digit.
        for r in fees:
            if r["trade_id"] == self.last_trade and settles(delta, r["amount"]):
                r["_inferred"] = True
                return r
        return None

    def _done_with(self, row: Row) -> None:
        if row.pop("_inferred", False):
            row["attribution"] = "inferred"
            row["_settled"] = True
        effects = self.pending.get(row["trade_id"])
        if effects is not None and all(
            r["attribution"] == "exact" or r.get("_settled") for r in effects
        ):
            self.pending.remove(row["trade_id"])

    # --- ledger rows --------------------------------------------------------------------------

    def _await_ledger(self, row: Row) -> None:
        if row["ledger_id"] is not None or row["amount"] is None:
            return
        key = self._ledger_key(row)
        self.awaiting.setdefault(key, []).append(row)
        self.awaiting_count += 1
        # Oldest first by the trade's event, then by the row's own key (not by arrival: a
        # fold restored from the table sees the rows in another order than a fold that ran
        # on, and both must forget the same one).
        age = (row["trade_event_id"], str(_key(row)), next(self.arrivals), key, row)
        heapq.heappush(self.by_age, age)
        if self.awaiting_count > AWAITING_LEDGER:
            self._forget_oldest()
        elif len(self.by_age) > 2 * self.awaiting_count + 10_000:
            self._compact()

    @staticmethod
    def _ledger_key(row: Row) -> tuple[Any, Any, Decimal]:
        amount = row["amount"]
        if row["part"] in ("quote", "interest") and row["attribution"] != "exact":
            amount = amount.quantize(_EIGHT, ROUND_HALF_EVEN) if _long(amount) else amount
        return (row["wallet_type"], row["currency"], amount.normalize())

    def _forget_oldest(self) -> None:
        while self.by_age:
            *_, key, row = heapq.heappop(self.by_age)
            rows = self.awaiting.get(key, [])
            for i, waiting in enumerate(rows):
                if waiting is row:
                    rows.pop(i)
                    if not rows:
                        del self.awaiting[key]
                    self.awaiting_count -= 1
                    return

    def _compact(self) -> None:
        """Drop the age entries of rows no longer awaiting (they found their ledger row)."""
        still = {id(r) for rows in self.awaiting.values() for r in rows}
        self.by_age = [entry for entry in self.by_age if id(entry[-1]) in still]
        heapq.heapify(self.by_age)

    def _ledger(self, event: Event, payload: Any, out: Output) -> None:
        if not isinstance(payload, list):
            self.skipped += 1
            return
        for entry in ledger_rows(payload):
            code = category(entry["description"])
            interest = code in INTEREST_CATEGORIES
            if not (interest or code in FILL_CATEGORIES) or entry["amount"] is None:
                continue
            if entry["id"] in self.used_ledgers:
                continue
            named = fill_text(entry["description"])
            key = (entry["wallet"], entry["currency"], entry["amount"].normalize())
            rows = self.awaiting.get(key)
            if not rows:
                continue
            for i, r in enumerate(rows):
                if (r["part"] == "interest") != interest:
                    continue
                if named is None or (named.fee == (r["part"] == "fee") and _names(named, r)):
                    rows.pop(i)
                    self.awaiting_count -= 1
                    self.used_ledgers.add(entry["id"])
                    r["ledger_id"] = entry["id"]
                    if r["attribution"] != "exact":
                        r["attribution"] = "exact"
                        r["amount"] = entry["amount"]
                        r["event_id"] = event.id
                    out.upsert(NAME, _key(r), _plain(r))
                    break


def _names(named: FillText, row: Row) -> bool:
    """Whether a text names this effect's fill (amount and price)."""
    amount, price = row["exec_amount"], row["exec_price"]
    return amount is not None and abs(amount) == named.amount and price == named.price


def _partial(carried: Decimal | None, expected: Decimal | None) -> bool:
    """Whether ``carried`` is part of ``expected`` (same sign, smaller): more wu to come."""
    if carried is None or expected is None or carried == 0:
        return False
    return (carried > 0) == (expected > 0) and abs(carried) < abs(expected)


def _long(amount: Decimal) -> bool:
    exponent = amount.as_tuple().exponent
    return isinstance(exponent, int) and exponent < -8


def _plain(row: Row) -> Row:
    """The row as its table holds it (without the fold's working values)."""
    return {k: v for k, v in row.items() if not k.startswith("_")}
