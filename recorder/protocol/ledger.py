"""What a ledger description says (audit.md §2-§3, rest.md §3.4): its Bitfinex category code,
and for the two kinds a fill leaves, the amount, pair and price it names.

The description is the only type information a ledger row carries. Bitfinex's own report
backend derives the ``category`` filter code from the text by prefix (bfx-reports-framework,
``get-category-from-description.js``); the rules below follow the same prefixes, in the same
order (the first that matches wins, one exception noted below), matched without regard to
case. Unknown text has no
category (None), and is counted as such by the reports, never guessed.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import NamedTuple

_STARTS = "starts"
_HAS = "has"
_RE = "re"

# (code, test, pattern): in order; the first match names the category.
_RULES: tuple[tuple[int, str, str], ...] = (
    (5, _STARTS, "exchange"),
    (22, _STARTS, "position modified"),
    (22, _STARTS, "position closed"),
    (22, _RE, r"position #[0-9]* close"),
    (22, _RE, r"position #[0-9]* liquidate"),
    (22, _RE, r"position pl @\s?[0-9]*\.?[0-9]* settlement \(trade\) on wallet margin"),
    (23, _STARTS, "position claim"),
    (23, _RE, r"position #[0-9]* claim"),
    (25, _RE, r"position #[0-9]* transfer"),
    (26, _RE, r"position #[0-9]* swap"),
    (27, _STARTS, "position funding cost"),
    (27, _STARTS, "interest charge"),
    (27, _RE, r"position #[0-9]* funding cost"),
    (28, _STARTS, "margin funding payment"),
    (28, _STARTS, "swap payment"),
    (28, _STARTS, "interest payment"),
    (29, _STARTS, "funding event"),
    (31, _HAS, "settlement"),
    (51, _STARTS, "transfer"),
    (101, _STARTS, "deposit ("),
    (101, _STARTS, "deposit on wallet"),
    # (Before 104, unlike the reference, whose " withdrawal #" test also takes "Canceled
    # withdrawal #N": a cancelled withdrawal gives the money back, it is no withdrawal.)
    (105, _STARTS, "canceled withdrawal"),
    (104, _HAS, " withdrawal #"),
    (201, _STARTS, "trading fee"),
    (202, _HAS, "trading rebate"),
    (204, _STARTS, "hidden order fee"),
    (207, _STARTS, "otc trade fee"),
    (222, _STARTS, "swap fee"),
    (224, _STARTS, "claiming fee"),
    (226, _HAS, "margin funding charge"),
    (241, _STARTS, "earned fee"),
    (241, _STARTS, "affiliate rebate"),
    (243, _STARTS, "ethfx loyalty fee"),
    (251, _HAS, "deposit fee"),
    (254, _HAS, "withdrawal fee"),
    (255, _HAS, "withdrawal express fee"),
    (258, _STARTS, "miner fee"),
    (262, _STARTS, "staking reward"),
    (401, _STARTS, "adjustment"),
    (501, _STARTS, "expense"),
    (905, _STARTS, "currency conversion"),
    (905, _STARTS, "computation fee"),
    (907, _STARTS, "monthly profit payment"),
    (911, _STARTS, "losses"),
)
_COMPILED = tuple(
    (code, test, re.compile(pattern) if test == _RE else pattern) for code, test, pattern in _RULES
)

# The statement's groups (report, koinly): each category code -> the group it sums into.
GROUPS: dict[int, str] = {
    5: "trades",
    22: "settlements",
    23: "settlements",
    25: "transfers",
    26: "settlements",
    27: "funding costs",
    28: "funding income",
    29: "funding income",
    31: "settlements",
    51: "transfers",
    101: "deposits",
    104: "withdrawals",
    105: "withdrawals",
    201: "fees",
    202: "fees",
    204: "fees",
    207: "fees",
    222: "fees",
    224: "fees",
    226: "funding costs",
    228: "fees",
    241: "funding income",
    243: "fees",
    251: "fees",
    254: "fees",
    255: "fees",
    258: "fees",
    262: "funding income",
    905: "fees",
}
GROUP_ORDER = (
    "trades",
    "fees",
    "funding income",
    "funding costs",
    "deposits",
    "withdrawals",
    "transfers",
    "settlements",
    "other",
)


def category(description: object) -> int | None:
    """Bitfinex's category code for a ledger description; None when the text is unknown."""
    if not isinstance(description, str) or not description:
        return None
    text = description.lower()
    for code, test, pattern in _COMPILED:
        if test == _STARTS:
            if text.startswith(pattern):  # type: ignore[arg-type]
                return code
        elif test == _HAS:
            if pattern in text:  # type: ignore[operator]
                return code
        elif pattern.search(text):  # type: ignore[union-attr]
            return code
    return None


def group(code: int | None) -> str:
    """The statement group of a category code (``other`` for unknown ones)."""
    return GROUPS.get(code, "other") if code is not None else "other"


class FillText(NamedTuple):
    """What an ``Exchange ...`` or ``Trading fees for ...`` text names."""

    fee: bool
    amount: Decimal  # the fill's base amount, unsigned as the text writes it
    base: str
    price: Decimal


_EXCHANGE = re.compile(r"^Exchange (?P<a>[-0-9.eE+]+) (?P<b>\w+) for \w+ @ (?P<p>[-0-9.eE+]+)")
_FEES = re.compile(
    r"^Trading fees for (?P<a>[-0-9.eE+]+) (?P<b>\w+) \((?P<pair>[^)]*)\) @ (?P<p>[-0-9.eE+]+)"
)


def fill_text(description: object) -> FillText | None:
    """The fill an exchange or trading-fee text names (wu last-change text, ledger
    description); None for any other text or unreadable numbers."""
    if not isinstance(description, str):
        return None
    found = _EXCHANGE.match(description)
    fee = False
    if found is None:
        found = _FEES.match(description)
        fee = True
    if found is None:
        return None
    try:
        amount, price = Decimal(found["a"]), Decimal(found["p"])
    except InvalidOperation:
        return None
    if not amount.is_finite() or not price.is_finite():
        return None
    return FillText(fee, abs(amount), found["b"], price)
