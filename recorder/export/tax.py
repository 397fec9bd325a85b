"""Generic imports of tax tools (audit.md §4.2): Koinly's universal CSV and rotki's generic
trades and events CSVs, for the fills and for what only the ledger shows (funding income and
costs, staking, rebates, fees booked only in the ledger, settlements, deposits and
withdrawals).

What goes where (the README's "For tax filers" repeats it):

* Exchange fills (order type ``EXCHANGE ...``) are trades: the base and quote amounts swap,
  the fee is the trade's fee. A margin fill changes a position, not the wallets: it is no
  trade for a tax tool; its fee is booked in the ledger (a trading fee on the margin wallet)
  and exported from there.
* Ledger entries by category (``ledgers.category``): exchange trades (5) and their trading
  fees on the exchange wallet (201) are the fills above and are left out; transfers between
  one's own Bitfinex wallets (25, 51) are left out: the tools see one Bitfinex account whose
  holdings they do not change (exporting them would book each as a withdrawal and a deposit).
  The rest is exported with the tool's label: funding payments ``lending interest`` /
  ``Income``, staking rewards ``staking`` / ``Staking``, affiliate rebates ``reward`` /
  ``Income``, funding charges ``margin fee`` / ``Spend``, other fees ``cost`` / ``Spend``,
  margin fills' trading fees ``margin fee`` / ``Spend``, position settlements
  ``realized gain`` (Koinly books an outgoing one as a loss) / ``Income`` or ``Loss``,
  deposits and withdrawals unlabelled / ``Deposit`` and ``Withdrawal``. An entry of unknown
  category keeps its sign, no label, and its description.

Amounts are plain decimals, exact (a quote amount is the exact product ``|A| x P``).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal
from typing import Any

from recorder.export.bitfinex import pair, plain
from recorder.projections.fills import split_symbol

KOINLY_HEADER = [
    "Date",
    "Sent Amount",
    "Sent Currency",
    "Received Amount",
    "Received Currency",
    "Fee Amount",
    "Fee Currency",
    "Net Worth Amount",
    "Net Worth Currency",
    "Label",
    "Description",
    "TxHash",
]
ROTKI_TRADES_HEADER = [
    "Location",
    "Spend Currency",
    "Receive Currency",
    "Receive Amount",
    "Spend Amount",
    "Fee",
    "Fee Currency",
    "Description",
    "Timestamp",
]
ROTKI_EVENTS_HEADER = [
    "Type",
    "Location",
    "Currency",
    "Amount",
    "Fee",
    "Fee Currency",
    "Description",
    "Timestamp",
]
LOCATION = "bitfinex"

# Ledger categories that are the fills themselves (on the exchange wallet) or transfers
# between one's own wallets: not exported from the ledger.
TRADE_CATEGORIES = frozenset({5})
FEE_OF_FILLS = 201
TRANSFERS = frozenset({25, 51})
# category -> (Koinly label, rotki type) for an incoming / outgoing entry
_LABELS: dict[int, tuple[str, str]] = {
    28: ("lending interest", "Income"),
    29: ("lending interest", "Income"),
    241: ("reward", "Income"),
    262: ("staking", "Staking"),
    27: ("margin fee", "Spend"),
    226: ("margin fee", "Spend"),
    101: ("", "Deposit"),
    104: ("", "Withdrawal"),
    105: ("", "Deposit"),  # a canceled withdrawal: the amount comes back
}
_SETTLEMENTS = frozenset({22, 23, 26, 31})
_FEES = frozenset({201, 202, 204, 207, 222, 224, 228, 243, 251, 254, 255, 258, 905})


def koinly_date(t: datetime | None) -> str:
    """Koinly's universal format: ``YYYY-MM-DD HH:mm UTC`` (UTC only)."""
    return t.strftime("%Y-%m-%d %H:%M UTC") if t is not None else ""


def ms(t: datetime | None) -> str:
    return str(int(t.timestamp() * 1000)) if t is not None else ""


def _swap(r: Any) -> tuple[Decimal, str, Decimal, str] | None:
    """(sent amount, sent currency, received amount, received currency) of an exchange fill;
    None for a margin fill or a row that says too little."""
    split = split_symbol(r.symbol)
    amount, price = r.exec_amount, r.exec_price
    if split is None or amount is None or price is None or amount == 0:
        return None
    if not (isinstance(r.order_type, str) and r.order_type.startswith("EXCHANGE")):
        return None
    base, quote = split
    value = _trimmed(abs(amount * price))
    if amount > 0:
        return value, quote, amount, base
    return abs(amount), base, value, quote


def _trimmed(value: Decimal) -> Decimal:
    """A product without the zeros multiplication adds (0.1085 x 29640 = 3215.9400 ->
    3215.94), and never in exponent form (3.2E+3 -> 3200)."""
    value = value.normalize()
    exponent = value.as_tuple().exponent
    return value.quantize(Decimal(1)) if isinstance(exponent, int) and exponent > 0 else value


def _fill_text(r: Any) -> str:
    return f"Bitfinex fill {r.id}: {plain(r.exec_amount)} {pair(r.symbol)} @ {plain(r.exec_price)}"


def koinly_fills(rows: Iterator[Any]) -> Iterator[list[str]]:
    for r in rows:
        swap = _swap(r)
        if swap is None:
            continue
        sent, sent_ccy, received, received_ccy = swap
        fee = abs(r.fee) if r.fee else None
        yield [
            koinly_date(r.mts_create),
            plain(sent),
            sent_ccy,
            plain(received),
            received_ccy,
            plain(fee),
            r.fee_currency if fee is not None else "",
            "",
            "",
            "",
            _fill_text(r),
            f"bitfinex:trade:{r.id}",
        ]


def rotki_fills(rows: Iterator[Any]) -> Iterator[list[str]]:
    for r in rows:
        swap = _swap(r)
        if swap is None:
            continue
        sent, sent_ccy, received, received_ccy = swap
        fee = abs(r.fee) if r.fee else Decimal(0)
        yield [
            LOCATION,
            sent_ccy,
            received_ccy,
            plain(received),
            plain(sent),
            plain(fee),
            (r.fee_currency or received_ccy) if r.fee else received_ccy,
            _fill_text(r),
            ms(r.mts_create),
        ]


def ledger_item(r: Any) -> tuple[str, str] | None:
    """(Koinly label, rotki type) of a ledger entry to export; None: left out (a fill, its
    fee on the exchange wallet, a transfer between own wallets, or no amount)."""
    code, amount = r.category, r.amount
    if amount is None or amount == 0 or code in TRADE_CATEGORIES or code in TRANSFERS:
        return None
    if code == FEE_OF_FILLS:
        if (r.wallet or "") == "exchange":
            return None  # the exchange fill's own fee: in its trade row
        return "margin fee", "Spend"  # a margin fill's fee: only the ledger has it
    incoming = amount > 0
    if code in _LABELS:
        return _LABELS[code]
    if code in _SETTLEMENTS:
        return "realized gain", "Income" if incoming else "Loss"
    if code in _FEES:
        return ("cost", "Spend") if not incoming else ("", "Income")  # a fee refund
    return "", "Income" if incoming else "Spend"  # unknown category: as it is


def koinly_ledger(rows: Iterator[Any]) -> Iterator[list[str]]:
    for r in rows:
        item = ledger_item(r)
        if item is None:
            continue
        label = item[0]
        amount = r.amount
        incoming = amount > 0
        yield [
            koinly_date(r.mts),
            "" if incoming else plain(abs(amount)),
            "" if incoming else r.currency,
            plain(amount) if incoming else "",
            r.currency if incoming else "",
            "",
            "",
            "",
            "",
            label,
            r.description or "",
            f"bitfinex:ledger:{r.id}",
        ]


def rotki_ledger(rows: Iterator[Any]) -> Iterator[list[str]]:
    for r in rows:
        item = ledger_item(r)
        if item is None:
            continue
        yield [
            item[1],
            LOCATION,
            r.currency,
            plain(abs(r.amount)),
            "0",
            r.currency,
            r.description or "",
            ms(r.mts),
        ]
