"""A deterministic model of one Bitfinex account.

:class:`AccountModel` holds the account's true state (wallets, orders, positions, trades,
funding offers/credits/loans, balance/margin/funding info) and, on every :meth:`step`, performs
one account action and returns the chanId 0 messages the exchange would send for it, in the
exchange's order (protocol.md §6, §8): ``n`` request notifications, ``on``/``ou``/``oc`` (an
order filled on arrival has only ``oc``), ``te`` then ``tu`` with the fee, wallet ``wu``s,
``pn``/``pu``/``pc`` for margin fills, funding ``fo*``/``fc*``/``fl*``/``fte``, ``bu``, ``miu``,
``fiu``.

Everything is driven by a seeded :class:`random.Random` and an injected millisecond clock, so
the same seed and clock give the same messages. The first steps follow a fixed tour that makes
every message kind appear early; after that actions are drawn at random.

Values are floats rounded to 8 decimals: the frames carry them as JSON numbers, and a
projection that parses the frame text as decimals gets ``Decimal(repr(value))`` exactly.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from recorder.protocol import layouts

Message = tuple[str, Any]  # (abbreviation, payload)

EXCHANGE_SYMBOLS = {"tBTCUSD": ("BTC", "USD", 30000.0), "tETHUSD": ("ETH", "USD", 2000.0)}
MARGIN_SYMBOL = "tBTCUSD"
FUNDING_SYMBOL = "fUSD"
FEE_RATE = 0.002  # taker
MAKER_FEE_RATE = 0.001
MAX_OPEN_ORDERS = 40
# Funding credits (or loans) open at once, at most: a new one first ends the oldest, as an
# account's terms run out (without it credits were opened five times as often as closed, and
# a long run's account held tens of thousands: snapshots of megabytes, not an account).
MAX_OPEN_FUNDING = 40


def _r(x: float, digits: int = 8) -> float:
    value = round(x, digits)
    return 0.0 if value == 0 else value


def _price(x: float) -> float:
    """Five significant digits, as the exchange quotes prices."""
    return float(f"{x:.5g}")


@dataclass
class AccountModel:
    seed: int = 0
    clock: Callable[[], int] = field(default=lambda: 1_700_000_000_000)
    user_id: int = 0

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.user_id = self.user_id or 100000 + self.rng.randrange(900000)
        self.next_id = 10_000_000 + self.rng.randrange(1_000_000) * 10
        self.prices = {s: p for s, (_b, _q, p) in EXCHANGE_SYMBOLS.items()}
        self.wallets: dict[tuple[str, str], dict[str, Any]] = {}
        for wtype, ccy, bal in (
            ("exchange", "USD", 100000.0),
            ("exchange", "BTC", 2.5),
            ("exchange", "ETH", 40.0),
            ("margin", "USD", 50000.0),
            ("funding", "USD", 25000.0),
        ):
            self._wallet(wtype, ccy)["balance"] = bal
        self.orders: dict[int, dict[str, Any]] = {}  # open orders
        self.closed_orders: dict[int, dict[str, Any]] = {}
        self.positions: dict[str, dict[str, Any]] = {}  # active, by symbol
        # History the REST API serves (rest.md §3): closed positions and funding, and one
        # ledger entry per wallet change.
        self.closed_positions: dict[int, dict[str, Any]] = {}
        self.closed_funding: dict[str, dict[int, dict[str, Any]]] = {
            "offer": {},
            "credit": {},
            "loan": {},
        }
        self.ledger: list[dict[str, Any]] = []
        self.movements: list[dict[str, Any]] = []
        self.next_ledger_id = 5_000_000_000
        self.trades: dict[int, dict[str, Any]] = {}
        self.funding_offers: dict[int, dict[str, Any]] = {}
        self.funding_credits: dict[int, dict[str, Any]] = {}
        self.funding_loans: dict[int, dict[str, Any]] = {}
        self.funding_trades: dict[int, dict[str, Any]] = {}
        # credit id -> the interest its term pays (credits opened by a funding trade)
        self.term_interest: dict[int, float] = {}
        self.balance_info: dict[str, Any] = {}
        self.margin_info: dict[str, dict[str, Any]] = {}
        self.funding_info: dict[str, dict[str, Any]] = {}
        self._funding_books: dict[str, tuple[dict[int, dict[str, Any]], layouts.Layout, str]] = {
            "credit": (self.funding_credits, layouts.FUNDING_CREDIT, "fc"),
            "loan": (self.funding_loans, layouts.FUNDING_LOAN, "fl"),
        }
        self.steps = 0
        self._tour = self._the_tour()
        # Record a few open orders up front, so the very first snapshot is not empty.
        for _ in range(3):
            self.place_order()

    def _the_tour(self) -> list[Callable[[], list[Message]]]:
        """The actions a step takes in turn: every message type the account channel has."""
        return [
            self.place_order,
            self.partial_fill,
            self.place_margin_order,
            self.fill_margin_order,
            self.balance_update,
            self.margin_info_base,
            self.margin_info_sym,
            self.funding_info_update,
            self.funding_offer_new,
            self.funding_offer_update,
            lambda: self._funding_open("credit"),
            lambda: self._funding_update("credit"),
            lambda: self._funding_close("credit"),
            lambda: self._funding_open("loan"),
            lambda: self._funding_update("loan"),
            lambda: self._funding_close("loan"),
            self.funding_offer_close,
            self.full_fill,
            self.place_order,
            self.cancel_order,
            self.rejected_order,
            self.market_order,
            self.position_update,
            self.close_position,
            self.transfer,
            self.price_alert,
            self.deposit,
            self.withdrawal,
            lambda: self._funding_open("credit"),
            lambda: self._funding_close("credit"),
            lambda: self._funding_open("loan"),
            lambda: self._funding_close("loan"),
        ]

    # --- helpers ------------------------------------------------------------------------------

    def _id(self) -> int:
        self.next_id += self.rng.randrange(1, 50)
        return self.next_id

    def _walk(self, symbol: str) -> float:
        p = self.prices[symbol] * (1 + self.rng.uniform(-0.002, 0.002))
        self.prices[symbol] = _price(p)
        return self.prices[symbol]

    def _wallet(self, wtype: str, ccy: str) -> dict[str, Any]:
        key = (wtype, ccy)
        if key not in self.wallets:
            self.wallets[key] = {
                "wallet_type": wtype,
                "currency": ccy,
                "balance": 0.0,
                "unsettled_interest": 0.0,
                "available_balance": None,
                "last_change": None,
                "trade_details": None,
            }
        return self.wallets[key]

    def _wu(self, wtype: str, ccy: str, delta: float, text: str, details: Any = None) -> Message:
        w = self._wallet(wtype, ccy)
        w["balance"] = _r(w["balance"] + delta)
        w["last_change"] = text
        w["trade_details"] = details
        self.next_ledger_id += 1
        self.ledger.append(
            {
                "id": self.next_ledger_id,
                "currency": ccy,
                "wallet": None,  # real answers carry null here; the wallet ends the text
                "mts": self.clock(),
                "amount": delta,
                "balance": w["balance"],
                "description": f"{text} on wallet {wtype}",
            }
        )
        return ("wu", layouts.WALLET.array(w))

    @staticmethod
    def _order_array(o: dict[str, Any]) -> list[Any]:
        return layouts.ORDER.array(o)

    def _notification(self, ntype: str, data: Any, status: str, text: str) -> Message:
        return (
            "n",
            layouts.NOTIFICATION.array(
                {
                    "mts": self.clock(),
                    "type": ntype,
                    "message_id": None,
                    "data": data,
                    "code": None,
                    "status": status,
                    "text": text,
                }
            ),
        )

    def _pick_open(self, margin: bool | None = None) -> dict[str, Any] | None:
        candidates = [
            o
            for o in self.orders.values()
            if margin is None or (o["order_type"] == "LIMIT") == margin
        ]
        return self.rng.choice(candidates) if candidates else None

    # --- actions ------------------------------------------------------------------------------

    def step(self) -> list[Message]:
        """Perform one account action; return the messages the exchange sends for it."""
        self.steps += 1
        if self._tour:
            action = self._tour.pop(0)
        else:
            action = self.rng.choices(
                [
                    self.place_order,
                    self.partial_fill,
                    self.full_fill,
                    self.cancel_order,
                    self.place_margin_order,
                    self.fill_margin_order,
                    self.position_update,
                    self.close_position,
                    self.market_order,
                    self.rejected_order,
                    self.balance_update,
                    self.margin_info_base,
                    self.margin_info_sym,
                    self.funding_info_update,
                    self.funding_offer_new,
                    self.funding_offer_update,
                    self.funding_offer_close,
                    self.funding_credit_cycle,
                    self.funding_loan_cycle,
                    self.transfer,
                    self.deposit,
                    self.withdrawal,
                ],
                weights=[14, 8, 6, 6, 4, 4, 4, 2, 3, 1, 6, 3, 3, 2, 2, 2, 2, 2, 2, 1, 1, 1],
            )[0]
        return action() or self.balance_update()

    def _new_order(self, symbol: str, otype: str, amount: float, price: float) -> dict[str, Any]:
        now = self.clock()
        return {
            "id": self._id(),
            "gid": None,
            "cid": now % 10**8 + self.rng.randrange(1000),
            "symbol": symbol,
            "mts_create": now,
            "mts_update": now,
            "amount": amount,
            "amount_orig": amount,
            "order_type": otype,
            "type_prev": None,
            "mts_tif": None,
            "flags": 0,
            "order_status": "ACTIVE",
            "price": price,
            "price_avg": 0,
            "price_trailing": 0,
            "price_aux_limit": 0,
            "notify": 0,
            "hidden": 0,
            "placed_id": None,
            "routing": "API>BFX",
            "meta": None,
        }

    def place_order(self) -> list[Message]:
        if len(self.orders) >= MAX_OPEN_ORDERS:
            return self.cancel_order()  # a trader keeps a bounded book
        symbol = self.rng.choice(sorted(EXCHANGE_SYMBOLS))
        price = _price(self._walk(symbol) * (1 + self.rng.uniform(-0.01, 0.01)))
        amount = _r(self.rng.choice([1, -1]) * self.rng.uniform(0.001, 0.5), 4)
        order = self._new_order(symbol, "EXCHANGE LIMIT", amount, price)
        self.orders[order["id"]] = order
        side = "buy" if amount > 0 else "sell"
        text = f"Submitting exchange limit {side} order for {abs(amount)} {symbol[1:4]}."
        return [
            self._notification("on-req", self._order_array(order), "SUCCESS", text),
            ("on", self._order_array(order)),
        ]

    def place_margin_order(self) -> list[Message]:
        if len(self.orders) >= MAX_OPEN_ORDERS:
            return self.cancel_order()
        price = self._walk(MARGIN_SYMBOL)
        amount = _r(self.rng.choice([1, -1]) * self.rng.uniform(0.01, 0.2), 4)
        order = self._new_order(MARGIN_SYMBOL, "LIMIT", amount, price)
        self.orders[order["id"]] = order
        text = f"Submitting limit order for {amount} BTC."
        return [
            self._notification("on-req", self._order_array(order), "SUCCESS", text),
            ("on", self._order_array(order)),
        ]

    def _affordable(self, order: dict[str, Any], fill: float) -> bool:
        """Whether the exchange wallets can pay for ``fill`` of an exchange ``order`` (the
        exchange never lets a wallet go negative)."""
        if order["order_type"] == "LIMIT":
            return True
        base, quote, _ = EXCHANGE_SYMBOLS[order["symbol"]]
        if fill > 0:
            cost = fill * order["price"] * (1 + FEE_RATE)
            return self._wallet("exchange", quote)["balance"] >= cost
        return self._wallet("exchange", base)["balance"] >= -fill

    def _execute(self, order: dict[str, Any], fill: float, *, taker: bool = False) -> list[Message]:
        """Fill ``fill`` of ``order`` (same sign as its amount): trade, fee, wallets, position.
        A market order takes liquidity (``maker`` 0, the taker fee); a resting limit order
        provides it."""
        symbol = order["symbol"]
        price = order["price"]
        base, quote, _ = EXCHANGE_SYMBOLS[symbol]
        rate = FEE_RATE if taker else MAKER_FEE_RATE
        now = self.clock()
        trade = {
            "id": self._id(),
            "symbol": symbol,
            "mts_create": now,
            "order_id": order["id"],
            "exec_amount": fill,
            "exec_price": price,
            "order_type": order["order_type"],
            "order_price": price,
            "maker": 0 if taker else 1,
            "fee": None,
            "fee_currency": None,
            "cid": order["cid"],
        }
        msgs: list[Message] = [("te", layouts.TRADE.array(trade))]
        margin = order["order_type"] == "LIMIT"
        if margin:
            fee = _r(-abs(fill) * price * rate)
            fee_ccy = quote
        elif fill > 0:
            fee = _r(-fill * rate)
            fee_ccy = base
        else:
            fee = _r(fill * price * rate)
            fee_ccy = quote
        trade["fee"] = fee
        trade["fee_currency"] = fee_ccy
        self.trades[trade["id"]] = trade
        msgs.append(("tu", layouts.TRADE.array(trade)))
        details = {
            "reason": "TRADE",
            "order_id": order["id"],
            "order_id_oppo": self._id(),
            "trade_price": f"{price}",
            "trade_amount": f"{fill}",
        }
        # The exchange's texts (rest.md §3.4, protocol.md §6.4).
        exchanged = f"Exchange {abs(fill)} {base} for {quote} @ {price}"
        fees = (
            f"Trading fees for {abs(fill)} {base} ({base}{quote}) @ {price} "
            f"on BFX ({rate * 100:g}%)"
        )
        if margin:
            msgs.append(self._wu("margin", quote, fee, fees, None))
            msgs.extend(self._position_fill(symbol, fill, price, details))
        else:
            msgs.append(self._wu("exchange", base, fill, exchanged, details))
            msgs.append(self._wu("exchange", quote, _r(-fill * price), exchanged, details))
            msgs.append(self._wu("exchange", fee_ccy, fee, fees, None))
        return msgs

    def _position_fill(
        self, symbol: str, fill: float, price: float, details: dict[str, Any]
    ) -> list[Message]:
        pos = self.positions.get(symbol)
        now = self.clock()
        if pos is None:
            pos = {
                "symbol": symbol,
                "status": "ACTIVE",
                "amount": fill,
                "base_price": price,
                "margin_funding": 0,
                "margin_funding_type": 0,
                "pl": None,
                "pl_perc": None,
                "price_liq": None,
                "leverage": None,
                "position_id": self._id(),
                "mts_create": now,
                "mts_update": now,
                "type": 0,
                "collateral": 0,
                "collateral_min": 0,
                "meta": {**details, "liq_stage": None},
            }
            self.positions[symbol] = pos
            return [("pn", layouts.POSITION.array(pos))]
        pos["amount"] = _r(pos["amount"] + fill)
        pos["meta"] = {**details, "liq_stage": None}
        pos["mts_update"] = now
        if pos["amount"] == 0:
            pos["status"] = "CLOSED"
            del self.positions[symbol]
            self.closed_positions[pos["position_id"]] = pos
            return [("pc", layouts.POSITION.array(pos))]
        return [("pu", layouts.POSITION.array(pos))]

    def partial_fill(self) -> list[Message]:
        order = self._pick_open(margin=False)
        if order is None or abs(order["amount"]) < 0.0002:
            return self.place_order()
        fill = _r(order["amount"] * self.rng.choice([0.25, 0.5]), 8)
        if not self._affordable(order, fill):
            return self.cancel_order()
        order["amount"] = _r(order["amount"] - fill)
        order["price_avg"] = order["price"]
        order["mts_update"] = self.clock()
        order["order_status"] = f"PARTIALLY FILLED @ {order['price']}({fill})"
        return [("ou", self._order_array(order)), *self._execute(order, fill)]

    def _close_order(self, order: dict[str, Any], status: str) -> Message:
        previous = order["order_status"]
        if previous.startswith("PARTIALLY FILLED"):
            status = f"{status}: was {previous}" if status.startswith("EXECUTED") else status
            if status == "CANCELED":
                status = f"CANCELED was: {previous}"
        order["order_status"] = status
        order["mts_update"] = self.clock()
        del self.orders[order["id"]]
        self.closed_orders[order["id"]] = order
        return ("oc", self._order_array(order))

    def _fill_whole(self, margin: bool) -> list[Message]:
        """Fill an open order completely: it leaves via ``oc``, its trades follow
        (protocol.md §8 items 4 and 6)."""
        order = self._pick_open(margin=margin)
        if order is None:
            return self.place_margin_order() if margin else self.place_order()
        fill = order["amount"]
        if not self._affordable(order, fill):
            return [self._close_order(order, "CANCELED")]
        order["amount"] = 0
        order["price_avg"] = order["price"]
        closing = self._close_order(order, f"EXECUTED @ {order['price']}({fill})")
        return [closing, *self._execute(order, fill)]

    def full_fill(self) -> list[Message]:
        return self._fill_whole(margin=False)

    def fill_margin_order(self) -> list[Message]:
        return self._fill_whole(margin=True)

    def cancel_order(self) -> list[Message]:
        order = self._pick_open()
        if order is None:
            return self.place_order()
        text = f"Submitted for cancellation; waiting for confirmation (ID: {order['id']})."
        note = self._notification("oc-req", self._order_array(order), "SUCCESS", text)
        return [note, self._close_order(order, "CANCELED")]

    def rejected_order(self) -> list[Message]:
        echo = {
            "symbol": "tBTCUSD",
            "amount": 0.00001,
            "order_type": "EXCHANGE LIMIT",
            "flags": 0,
            "price": 1,
        }
        text = "Invalid order: minimum size for BTC/USD is 0.00006"
        return [self._notification("on-req", layouts.ORDER.array(echo), "ERROR", text)]

    def market_order(self) -> list[Message]:
        """An order filled on arrival: no ``on``, only ``oc`` (protocol.md §8 item 5)."""
        symbol = self.rng.choice(sorted(EXCHANGE_SYMBOLS))
        price = self._walk(symbol)
        amount = _r(self.rng.choice([1, -1]) * self.rng.uniform(0.001, 0.05), 4)
        order = self._new_order(symbol, "EXCHANGE MARKET", amount, price)
        if not self._affordable(order, amount):
            return self.place_order()
        self.orders[order["id"]] = order
        order["amount"] = 0
        order["price_avg"] = price
        closing = self._close_order(order, f"EXECUTED @ {price}({amount})")
        return [closing, *self._execute(order, amount, taker=True)]

    def position_update(self) -> list[Message]:
        pos = self.positions.get(MARGIN_SYMBOL)
        if pos is None:
            return self.fill_margin_order()
        price = self._walk(MARGIN_SYMBOL)
        pos["pl"] = _r((price - pos["base_price"]) * pos["amount"])
        pos["pl_perc"] = _r(pos["pl"] / abs(pos["base_price"] * pos["amount"]) * 100, 6)
        pos["price_liq"] = _price(pos["base_price"] * (0.5 if pos["amount"] > 0 else 1.5))
        pos["leverage"] = _r(self.rng.uniform(1, 5), 4)
        return [("pu", layouts.POSITION.array(pos))]

    def close_position(self) -> list[Message]:
        pos = self.positions.get(MARGIN_SYMBOL)
        if pos is None:
            return self.fill_margin_order()
        price = self._walk(MARGIN_SYMBOL)
        order = self._new_order(MARGIN_SYMBOL, "LIMIT", _r(-pos["amount"]), price)
        order["order_status"] = "ACTIVE (note:POSCLOSE)"
        self.orders[order["id"]] = order
        fill = order["amount"]
        order["amount"] = 0
        order["price_avg"] = price
        closing = self._close_order(order, f"EXECUTED @ {price}({fill}) was ACTIVE (note:POSCLOSE)")
        return [closing, *self._execute(order, fill)]

    def transfer(self) -> list[Message]:
        """A wallet transfer (exchange -> margin USD): an ``acc_tf`` notification, then a
        ``wu`` per wallet (and a ledger entry each)."""
        amount = _r(self.rng.uniform(10, 100), 2)
        if self._wallet("exchange", "USD")["balance"] < amount:
            return self.deposit()
        text = f"{amount} US Dollar transfered from Exchange to Margin"
        note = self._notification(
            "acc_tf",
            [self.clock(), "exchange", "margin", None, "USD", "USD", None, amount],
            "SUCCESS",
            text,
        )
        what = f"Transfer of {amount} USD from wallet Exchange to Margin"
        return [
            note,
            self._wu("exchange", "USD", -amount, what),
            self._wu("margin", "USD", amount, what),
        ]

    def deposit(self) -> list[Message]:
        """A deposit: a ``deposit_complete`` notification, a ``wu`` and a ledger entry
        (category 101), and a movement for the REST history (rest.md §3.7)."""
        ccy, name, amount = self.rng.choice(
            [
                ("BTC", "BITCOIN", _r(self.rng.uniform(0.01, 0.2), 4)),
                ("USD", "WIRE", _r(self.rng.uniform(100, 2000), 2)),
            ]
        )
        movement = self._movement(ccy, name, amount, 0.0)
        note = self._notification(
            "deposit_complete", [ccy, amount], "SUCCESS", f"Deposit completed: {amount} {ccy}"
        )
        return [note, self._wu("exchange", ccy, amount, f"Deposit ({name}) #{movement['id']}")]

    def withdrawal(self) -> list[Message]:
        """A withdrawal and its fee: two ``wu`` frames and ledger entries (categories 104 and
        254), and a movement; only what the wallet holds."""
        wallet = self._wallet("exchange", "BTC")
        fee = 0.0004
        amount = _r(min(self.rng.uniform(0.01, 0.1), wallet["balance"] - fee), 4)
        if amount <= 0:
            return self.deposit()
        movement = self._movement("BTC", "BITCOIN", -amount, -fee)
        ref = f"#{movement['id']}"
        return [
            self._wu("exchange", "BTC", -amount, f"Bitcoin Withdrawal {ref}"),
            self._wu("exchange", "BTC", -fee, f"Bitcoin Withdrawal fee {ref}"),
        ]

    def _movement(self, ccy: str, name: str, amount: float, fee: float) -> dict[str, Any]:
        now = self.clock()
        movement = {
            "id": self._id(),
            "currency": ccy,
            "currency_name": name,
            "mts_started": now,
            "mts_updated": now,
            "status": "COMPLETED",
            "amount": amount,
            "fees": fee,
            "address": f"sim-{ccy.lower()}-address-{self.rng.randrange(10**6)}",
            "transaction_id": f"{self.rng.getrandbits(64):016x}",
        }
        self.movements.append(movement)
        return movement

    def price_alert(self) -> list[Message]:
        """A price alert set by the user (``uca``): a notification and nothing else."""
        price = self._walk("tBTCUSD")
        key = f"price:tBTCUSD:{price}"
        return [self._notification("uca", [key, "price", "tBTCUSD", price, 100], "SUCCESS", key)]

    def balance_update(self) -> list[Message]:
        total = 0.0
        for (_wtype, ccy), w in self.wallets.items():
            px = 1.0 if ccy == "USD" else self.prices.get(f"t{ccy}USD", 0.0)
            total += w["balance"] * px
        self.balance_info = {"aum": _r(total), "aum_net": _r(total * 0.999)}
        return [("bu", layouts.BALANCE_INFO.array(self.balance_info))]

    def margin_info_base(self) -> list[Message]:
        bal = self._wallet("margin", "USD")["balance"]
        pl = sum((p["pl"] or 0.0) for p in self.positions.values())
        info = {
            "user_pl": _r(pl),
            "user_swaps": 0,
            "margin_balance": _r(bal + pl),
            "margin_net": _r(bal + pl),
            "margin_min": _r(bal * 0.1),
        }
        self.margin_info["base"] = {"type": "base", "symbol": None, **info}
        return [("miu", ["base", layouts.MARGIN_INFO_BASE.array(info)])]

    def margin_info_sym(self) -> list[Message]:
        bal = self._wallet("margin", "USD")["balance"]
        price = self.prices[MARGIN_SYMBOL]
        info = {
            "tradable_balance": _r(bal * 3.3),
            "gross_balance": _r(bal * 3.3),
            "buy": _r(bal * 3.3 / price),
            "sell": _r(bal * 3.3 / price),
        }
        self.margin_info[MARGIN_SYMBOL] = {"type": "sym", "symbol": MARGIN_SYMBOL, **info}
        return [("miu", ["sym", MARGIN_SYMBOL, layouts.MARGIN_INFO_SYM.array(info)])]

    def funding_info_update(self) -> list[Message]:
        info = {
            "yield_loan": _r(self.rng.uniform(0.0001, 0.001), 10),
            "yield_lend": _r(self.rng.uniform(0.0001, 0.001), 10),
            "duration_loan": _r(self.rng.uniform(1, 30), 6),
            "duration_lend": _r(self.rng.uniform(1, 30), 6),
        }
        self.funding_info[FUNDING_SYMBOL] = {"symbol": FUNDING_SYMBOL, **info}
        return [("fiu", ["sym", FUNDING_SYMBOL, layouts.FUNDING_INFO.array(info)])]

    def funding_offer_new(self) -> list[Message]:
        now = self.clock()
        amount = _r(self.rng.uniform(50, 1000), 2)
        offer: dict[str, Any] = {
            "id": self._id(),
            "symbol": FUNDING_SYMBOL,
            "mts_create": now,
            "mts_update": now,
            "amount": amount,
            "amount_orig": amount,
            "offer_type": "LIMIT",
            "flags": 0,
            "offer_status": "ACTIVE",
            "rate": _r(self.rng.uniform(0.0001, 0.001), 8),
            "period": self.rng.choice([2, 7, 30]),
            "notify": 0,
            "hidden": 0,
            "renew": 0,
            "rate_real": None,
        }
        self.funding_offers[offer["id"]] = offer
        array = layouts.FUNDING_OFFER.array(offer)
        text = f"Submitting funding offer of {amount} USD at {offer['rate'] * 100:.4f}."
        return [self._notification("fon-req", array, "SUCCESS", text), ("fon", array)]

    def funding_offer_update(self) -> list[Message]:
        if not self.funding_offers:
            return self.funding_offer_new()
        offer = self.funding_offers[self.rng.choice(sorted(self.funding_offers))]
        taken = _r(offer["amount"] / 2, 2)
        offer["amount"] = _r(offer["amount"] - taken)
        offer["mts_update"] = self.clock()
        offer["offer_status"] = "PARTIALLY FILLED"
        ftrade = {
            "id": self._id(),
            "symbol": FUNDING_SYMBOL,
            "mts_create": self.clock(),
            "offer_id": offer["id"],
            "amount": taken,
            "rate": offer["rate"],
            "period": offer["period"],
            "maker": 1,
        }
        self.funding_trades[ftrade["id"]] = ftrade
        # The taken part is lent out as a credit; its term pays |amount| x rate x period when
        # it closes (one payment per term here; the exchange pays daily sums).
        ended = self._make_room("credit")
        credit = {**self._funding_position(credit=True, draw=False), "amount": taken}
        credit.update(rate=offer["rate"], period=offer["period"], rate_type="FIXED")
        self.funding_credits[credit["id"]] = credit
        term = Decimal(repr(taken)) * Decimal(repr(offer["rate"])) * offer["period"]
        self.term_interest[credit["id"]] = float(term.quantize(Decimal("1e-8"), ROUND_HALF_EVEN))
        return [
            ("fou", layouts.FUNDING_OFFER.array(offer)),
            ("fte", layouts.FUNDING_TRADE.array(ftrade)),
            *ended,
            ("fcn", layouts.FUNDING_CREDIT.array(credit)),
        ]

    def funding_offer_close(self) -> list[Message]:
        if not self.funding_offers:
            return self.funding_offer_new()
        offer = self.funding_offers.pop(self.rng.choice(sorted(self.funding_offers)))
        offer["offer_status"] = "CANCELED"
        offer["mts_update"] = self.clock()
        self.closed_funding["offer"][offer["id"]] = offer
        array = layouts.FUNDING_OFFER.array(offer)
        text = f"Submitted for cancellation; waiting for confirmation (ID: {offer['id']})."
        return [self._notification("foc-req", array, "SUCCESS", text), ("foc", array)]

    def _funding_position(self, credit: bool, draw: bool = True) -> dict[str, Any]:
        now = self.clock()
        if not draw:  # the caller sets amount, rate and period (no draw from the seed)
            amount, rate, period = 0.0, 0.0, 2
        else:
            amount = _r(self.rng.uniform(100, 2000), 2)
            rate = _r(self.rng.uniform(0.0001, 0.001), 8)
            period = self.rng.choice([2, 7, 30])
        item = {
            "id": self._id(),
            "symbol": FUNDING_SYMBOL,
            "side": -1 if credit else 1,
            "mts_create": now,
            "mts_update": now,
            "amount": amount,
            "flags": 0,
            "status": "ACTIVE",
            "rate_type": "FIXED" if credit else "VAR",
            "rate": rate,
            "period": period,
            "mts_opening": now,
            "mts_last_payout": None,
            "notify": 0,
            "hidden": 0,
            "renew": 0,
            "rate_real": None,
            "no_close": 0,
        }
        if credit:
            item["position_pair"] = MARGIN_SYMBOL
        return item

    def _funding_open(self, kind: str) -> list[Message]:
        book, layout, prefix = self._funding_books[kind]
        ended = self._make_room(kind)
        item = self._funding_position(credit=kind == "credit")
        book[item["id"]] = item
        return [*ended, (f"{prefix}n", layout.array(item))]

    def _make_room(self, kind: str) -> list[Message]:
        """End the oldest credit/loan when :data:`MAX_OPEN_FUNDING` are open (its term ran
        out), before another opens."""
        book = self._funding_books[kind][0]
        if len(book) < MAX_OPEN_FUNDING:
            return []
        return self._funding_close(kind, next(iter(book)))

    def _funding_update(self, kind: str) -> list[Message]:
        book, layout, prefix = self._funding_books[kind]
        if not book:
            return self._funding_open(kind)
        item = book[self.rng.choice(sorted(book))]
        item["mts_update"] = self.clock()
        item["amount"] = _r(item["amount"] * 0.9, 2)
        return [(f"{prefix}u", layout.array(item))]

    def _funding_close(self, kind: str, which: int | None = None) -> list[Message]:
        book, layout, prefix = self._funding_books[kind]
        if not book:
            return self._funding_open(kind)
        item = book.pop(self.rng.choice(sorted(book)) if which is None else which)
        item["mts_update"] = self.clock()
        item["status"] = "CLOSED (no more position)" if kind == "credit" else "CLOSED"
        self.closed_funding[kind][item["id"]] = item
        interest = self.term_interest.pop(item["id"], None)
        if interest is None:
            interest = _r(item["amount"] * item["rate"] * item["period"], 8)
        if kind == "credit":  # lent funds come back with interest (category 28)
            paid = self._wu("funding", "USD", interest, "Margin Funding Payment")
        else:  # borrowed funds cost interest (category 226)
            paid = self._wu("margin", "USD", -interest, "Margin Funding Charge")
        return [(f"{prefix}c", layout.array(item)), paid]

    def _funding_cycle(self, kind: str) -> list[Message]:
        """Open a new credit/loan, or update or close an existing one."""
        action = self.rng.choice([self._funding_open, self._funding_update, self._funding_close])
        return action(kind)

    def funding_credit_cycle(self) -> list[Message]:
        return self._funding_cycle("credit")

    def funding_loan_cycle(self) -> list[Message]:
        return self._funding_cycle("loan")

    # --- snapshots and truth --------------------------------------------------------------------

    def snapshots(self) -> list[Message]:
        """What the exchange sends right after a successful auth, from the true state."""
        return [
            ("ps", [layouts.POSITION.array(p) for p in self.positions.values()]),
            ("ws", [layouts.WALLET.array(w) for w in self.wallets.values()]),
            ("os", [layouts.ORDER.array(o) for o in self.orders.values()]),
            ("fos", [layouts.FUNDING_OFFER.array(o) for o in self.funding_offers.values()]),
            ("fcs", [layouts.FUNDING_CREDIT.array(c) for c in self.funding_credits.values()]),
            ("fls", [layouts.FUNDING_LOAN.array(c) for c in self.funding_loans.values()]),
            *([("bu", layouts.BALANCE_INFO.array(self.balance_info))] if self.balance_info else []),
        ]

    def truth(self) -> dict[str, Any]:
        """The account's true state as plain data (projection column names)."""

        def rows(book: dict[Any, dict[str, Any]]) -> list[dict[str, Any]]:
            return [dict(v) for v in book.values()]

        return {
            "user_id": self.user_id,
            "steps": self.steps,
            "orders": rows(self.orders),
            "positions": rows(self.positions),
            "wallets": rows(self.wallets),
            "trades": rows(self.trades),
            "funding_offers": rows(self.funding_offers),
            "funding_credits": rows(self.funding_credits),
            "funding_loans": rows(self.funding_loans),
            "funding_trades": rows(self.funding_trades),
            "balance_info": dict(self.balance_info),
            "margin_info": rows(self.margin_info),
            "funding_info": rows(self.funding_info),
        }
