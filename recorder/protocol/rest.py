"""The authenticated REST history API, sans-io (rest.md): request signing, the endpoints the
gap backfill uses, answers that never raise, and paging a window completely.

Nothing here does I/O or reads a clock: :class:`WindowPager` takes each answered page and says
which request comes next, so the rules (rest.md §3.1: newest first, both ends inclusive, a
full page continues at the time of its oldest row, fold by id so repeats are harmless, a full
page of one millisecond cannot progress and fails loudly) are plain synchronous tests.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from typing import Any

import orjson

API_PREFIX = "/api/v2/"


def rest_signature(api_secret: str, path: str, nonce: int, body: bytes) -> str:
    """Hex HMAC-SHA384 over ``/api/v2/<path><nonce><body>`` (rest.md §1.2): ``body`` is the
    exact bytes sent."""
    message = f"{API_PREFIX}{path}{nonce}".encode() + body
    return hmac.new(api_secret.encode(), message, hashlib.sha384).hexdigest()


def signed_headers(
    api_key: str, api_secret: str, path: str, nonce: int, body: bytes
) -> dict[str, str]:
    return {
        "content-type": "application/json",
        "accept": "application/json",
        "bfx-nonce": str(nonce),
        "bfx-apikey": api_key,
        "bfx-signature": rest_signature(api_secret, path, nonce, body),
    }


def encode_body(params: dict[str, Any]) -> bytes:
    """The body as sent and signed: ``null`` fields dropped (rest.md §0 item 6), compact."""
    return orjson.dumps({k: v for k, v in params.items() if v is not None})


@dataclass(frozen=True)
class Endpoint:
    name: str  # what the contract calls it (rest.<name>)
    path: str  # after /v2/
    limit: int  # the documented maximum page size
    time_index: int | None  # the row's time field the window filters and pages on

    @property
    def kind(self) -> str:
        return f"rest.{self.name}"


ENDPOINTS: dict[str, Endpoint] = {
    e.name: e
    for e in (
        # Orders history filters on MTS_UPDATE here (rest.md §3.0 notes the docs say
        # MTS_CREATE); orders open before the gap are fetched by id as well.
        Endpoint("orders-hist", "auth/r/orders/hist", 2500, 5),
        Endpoint("trades-hist", "auth/r/trades/hist", 2500, 2),
        Endpoint("ledgers-hist", "auth/r/ledgers/hist", 2500, 3),
        Endpoint("positions-hist", "auth/r/positions/hist", 50, 13),
        Endpoint("positions-audit", "auth/r/positions/audit", 250, 13),
        Endpoint("funding-trades-hist", "auth/r/funding/trades/hist", 1000, 2),
        Endpoint("funding-offers-hist", "auth/r/funding/offers/hist", 500, 3),
        Endpoint("funding-credits-hist", "auth/r/funding/credits/hist", 500, 4),
        Endpoint("funding-loans-hist", "auth/r/funding/loans/hist", 500, 4),
        Endpoint("movements-hist", "auth/r/movements/hist", 1000, 6),
        Endpoint("permissions", "auth/r/permissions", 0, None),
        # Current state (rest.md §3.8): what the snapshots after a reconnect revealed, as
        # REST sees it; these answers only explain reconciliation rows, they change no row.
        Endpoint("wallets", "auth/r/wallets", 0, None),
        Endpoint("orders", "auth/r/orders", 0, None),
        Endpoint("positions", "auth/r/positions", 0, None),
        Endpoint("funding-offers", "auth/r/funding/offers", 0, None),
        Endpoint("funding-credits", "auth/r/funding/credits", 0, None),
        Endpoint("funding-loans", "auth/r/funding/loans", 0, None),
    )
}
BY_PATH = {e.path: e for e in ENDPOINTS.values()}
# What a gap backfill pages through, in this order.
WINDOW_ENDPOINTS = (
    "orders-hist",
    "trades-hist",
    "ledgers-hist",
    "positions-hist",
    "funding-trades-hist",
    "funding-offers-hist",
    "funding-credits-hist",
    "funding-loans-hist",
    "movements-hist",
)
STATE_ENDPOINTS = (
    "orders",
    "positions",
    "funding-offers",
    "funding-credits",
    "funding-loans",
    "wallets",
)

# --- answers ----------------------------------------------------------------------------------

OK, API_ERROR, RATE_LIMITED, UNAVAILABLE = "ok", "error", "rate-limited", "unavailable"
FINAL_CODES = frozenset({10020, 10100, 10001})  # bad parameters, bad key/signature, permission
RETRY_CODES = frozenset({10114, 20060})  # nonce small (take a fresh one), maintenance


@dataclass(frozen=True)
class Answer:
    """What an HTTP answer means. ``status`` is one of ok, error, rate-limited,
    unavailable; ``rows`` the rows of an ok answer; ``code``/``text`` an error's."""

    status: str
    rows: list[Any] = field(default_factory=list)
    code: int | None = None
    text: str = ""

    @property
    def final(self) -> bool:
        """Retrying the same request cannot help."""
        return self.status == API_ERROR and self.code in FINAL_CODES


RATE_LIMIT_CODE = 11010
_RATE_LIMIT_TEXT = ("ratelimit", "err_rate_limit")


def _says_rate_limit(text: str) -> bool:
    low = text.lower()
    return any(word in low for word in _RATE_LIMIT_TEXT)


def read_answer(http_status: int, body: bytes | str) -> Answer:
    """Classify an answer by its status and body together (rest.md §2.1: HTTP 500 is
    usually a normal API error, so the body is read first). Never raises.

    - Rate limited: HTTP 429 whatever the body (a proxy's HTML page too), or an error body
      (``["error", 11010, ...]``, ``{"error": "ERR_RATE_LIMIT"}``, an unreadable error page)
      saying so. The words inside the rows of a 200 answer are data, not a rate limit.
    - API error: ``["error", CODE, "text"]``.
    - Unavailable (retried): any other error status (a 404 ``[]`` is not an empty window),
      a body that is not JSON, JSON that is not an array of rows.
    - OK: a 2xx JSON array."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    if http_status == 429:
        return Answer(RATE_LIMITED, text=text[:200])
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError:
        if http_status >= 400 and _says_rate_limit(text):
            return Answer(RATE_LIMITED, text=text[:200])
        return Answer(UNAVAILABLE, text=f"HTTP {http_status}: unreadable body")
    if isinstance(data, list) and data[:1] == ["error"]:
        code = data[1] if len(data) > 1 and type(data[1]) is int else None
        message = str(data[2]) if len(data) > 2 else ""
        if code == RATE_LIMIT_CODE or _says_rate_limit(message):
            return Answer(RATE_LIMITED, code=code, text=message[:200])
        return Answer(API_ERROR, code=code, text=message)
    if isinstance(data, dict) and _says_rate_limit(text):
        return Answer(RATE_LIMITED, text=text[:200])
    if not 200 <= http_status < 300 or not isinstance(data, list):
        return Answer(UNAVAILABLE, text=f"HTTP {http_status}: {text[:200]}")
    return Answer(OK, rows=data)


# --- paging a window ---------------------------------------------------------------------------


class PagingStuck(Exception):
    """A full page whose rows all share one millisecond: paging cannot progress."""


@dataclass
class WindowPager:
    """Pages ``[start, end]`` (ms, inclusive) of one endpoint newest first (rest.md §3.1)."""

    endpoint: Endpoint
    start: int
    end: int
    extra: dict[str, Any] = field(default_factory=dict)
    done: bool = False
    rows: int = 0

    def request(self) -> dict[str, Any]:
        """The next request's body parameters."""
        return {**self.extra, "start": self.start, "end": self.end, "limit": self.endpoint.limit}

    def receive(self, rows: list[Any]) -> None:
        """Take an answered page: a short page ends the window; a full one continues at the
        time of its oldest row (those rows come again; folding by id makes that harmless)."""
        self.rows += len(rows)
        if len(rows) < self.endpoint.limit:
            self.done = True
            return
        times = [_time(r, self.endpoint.time_index) for r in rows]
        oldest = min((t for t in times if t is not None), default=None)
        if oldest is None or oldest >= self.end:
            raise PagingStuck(
                f"{self.endpoint.name}: a full page of {len(rows)} rows all at {self.end}; "
                "cannot page further without losing rows"
            )
        self.end = oldest


def _time(row: Any, index: int | None) -> int | None:
    if index is None or not isinstance(row, list) or len(row) <= index:
        return None
    value = row[index]
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def write_scopes(permissions: list[Any]) -> list[str]:
    """The scopes a permissions answer grants WRITE for (unknown scopes count too)."""
    out = []
    for row in permissions:
        if isinstance(row, list) and len(row) >= 3 and row[2] not in (0, None, False):
            out.append(str(row[0]))
    return out


def write_caps(caps: dict[str, Any] | None) -> list[str]:
    """The scopes a WebSocket ``auth`` reply's ``caps`` grant write for."""
    if not isinstance(caps, dict):
        return []
    return sorted(
        scope
        for scope, rights in caps.items()
        if isinstance(rights, dict) and rights.get("write") not in (0, None, False)
    )


# --- the write-key policy: one rule, one text (the WebSocket caps and the REST check) ------


WRITE_KEY_ALLOWED = "the API key can write (allow_write_key = true)"


def write_key_refused(account: str, scopes: list[str]) -> str:
    """The one line that stops an account whose key can write."""
    return (
        f"account {account} stopped: its API key has WRITE permission for "
        f"{', '.join(scopes)}; a recorder needs only READ: create a read-only key (Bitfinex > "
        "API keys: leave every Write box unchecked), or set allow_write_key = true for this "
        "account"
    )


def write_key_end(scopes: list[str]) -> str:
    """The session's end reason when its key can write."""
    return f"error: key has write permissions ({', '.join(scopes)})"
