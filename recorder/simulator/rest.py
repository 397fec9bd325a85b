"""The simulated exchange's authenticated REST API (rest.md): the account model's history,
served by hypercorn's trio worker as a small ASGI app.

What a client sees is what Bitfinex does: ``POST /v2/auth/r/...`` with a JSON body, signed
headers checked with the same nonce sequence as the WebSocket ``auth`` (one per key), errors
as ``["error", CODE, "text"]`` with HTTP 500, a per-endpoint rate limit (90 a minute) answered
with ``ratelimit: error``, rows newest first, both time bounds inclusive in milliseconds, and
the endpoint's page maximum. Its state is its own (:class:`RestState`, ``sim.rest``): faults
for tests, ``fault = "down"`` (HTTP 503, an HTML body, as an edge outage) or ``"rate-limit"``,
and ``down_paths`` (endpoints answering a proxy's 503 page).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import trio

from recorder.protocol import layouts as L
from recorder.protocol.exchange import AuthChecker, ConnectionWindow
from recorder.protocol.rest import BY_PATH, Endpoint
from recorder.serving import is_http, serve_asgi
from recorder.simulator.model import AccountModel

READ_ONLY_PERMISSIONS = [
    [scope, 1, 0]
    for scope in ("account", "history", "orders", "positions", "funding", "settings", "wallets")
] + [["withdraw", 0, 0]]
# What an edge proxy answers for an endpoint that is down: a page of a few kilobytes.
PROXY_503_PAGE = (
    b"<!DOCTYPE html><html><head><title>503 Service Unavailable</title><style>"
    + b"body{font-family:sans-serif;margin:0;padding:2em}" * 60
    + b"</style></head><body><h1>503</h1><p>The origin is unavailable.</p></body></html>"
)
DEFAULT_LIMIT = 25  # what the exchange returns when a request names no limit


def _error(code: int, text: str) -> bytes:
    return orjson.dumps(["error", code, text])


@dataclass
class RestState:
    """The REST side's own state, which tests set and read (``sim.rest``)."""

    requests: list[tuple[str, bytes]] = field(default_factory=list)  # (path, body) of each
    fault: str | None = None  # "down" (an HTML 503 for everything) or "rate-limit"
    down_paths: set[str] = field(default_factory=set)  # endpoints answering a proxy's 503
    rate_limit: tuple[int, float] | None = (90, 60.0)  # requests per endpoint per window
    page_max: dict[str, int] = field(default_factory=dict)  # endpoint name -> page maximum
    permissions: list[list[Any]] = field(
        default_factory=lambda: [list(p) for p in READ_ONLY_PERMISSIONS]
    )
    port: int | None = None


class RestApi:
    """The ASGI app: the account model's history and current state, answered as the
    exchange does, with the faults and limits of its :class:`RestState`."""

    def __init__(self, state: RestState, model: AccountModel, auth: AuthChecker) -> None:
        self.state = state
        self.model = model
        self.auth = auth
        self.windows: dict[str, ConnectionWindow] = {}

    async def __call__(
        self, scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]
    ) -> None:
        if not await is_http(scope, receive, send):
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        status, payload = self.answer(scope["method"], scope["path"], headers, body)
        content_type = b"text/html" if payload.startswith(b"<") else b"application/json"
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", content_type)],
            }
        )
        await send({"type": "http.response.body", "body": payload})

    def answer(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, bytes]:
        state = self.state
        state.requests.append((path, body))
        if state.fault == "down":
            return 503, b"<html><body>503 Service Temporarily Unavailable</body></html>"
        if path.removeprefix("/v2/") in state.down_paths:
            return 503, PROXY_503_PAGE
        if state.fault == "rate-limit":
            return 429, _error(11010, "ratelimit: error")
        route = path.removeprefix("/v2/")
        endpoint = BY_PATH.get(route)
        if method != "POST" or endpoint is None:
            return 500, _error(10020, "path: invalid")
        if state.rate_limit is not None:
            window = self.windows.setdefault(route, ConnectionWindow(*state.rate_limit))
            if not window.admit(trio.current_time()):
                return 429, _error(11010, "ratelimit: error")
        refused = self.auth.check_rest(headers, route, body)
        if refused is not None:
            return 500, _error(*refused)
        try:
            params = orjson.loads(body) if body else {}
        except orjson.JSONDecodeError:
            return 500, _error(10020, "body: invalid")
        if not isinstance(params, dict):
            return 500, _error(10020, "body: invalid")
        return 200, orjson.dumps(self.rows(endpoint, params))

    def rows(self, endpoint: Endpoint, params: dict[str, Any]) -> list[Any]:
        model = self.model
        if endpoint.name == "permissions":
            return list(self.state.permissions)
        current: dict[str, tuple[L.Layout, dict[Any, dict[str, Any]]]] = {
            "wallets": (L.WALLET, model.wallets),
            "orders": (L.ORDER, model.orders),
            "positions": (L.POSITION, model.positions),
            "funding-offers": (L.FUNDING_OFFER, model.funding_offers),
            "funding-credits": (L.FUNDING_CREDIT, model.funding_credits),
            "funding-loans": (L.FUNDING_LOAN, model.funding_loans),
        }
        if endpoint.name in current:
            layout, book = current[endpoint.name]
            return [layout.array(v) for v in book.values()]
        rows = history(model, endpoint.name)
        ids = params.get("id")
        if isinstance(ids, list) and ids:
            id_index = 11 if endpoint.name.startswith("positions") else 0
            wanted = set(ids)
            rows = [r for r in rows if r[id_index] in wanted]
        t = endpoint.time_index
        start, end = params.get("start"), params.get("end")
        if t is not None:
            if isinstance(start, int):
                rows = [r for r in rows if r[t] is not None and r[t] >= start]
            if isinstance(end, int):
                rows = [r for r in rows if r[t] is not None and r[t] <= end]
            rows.sort(key=lambda r: (r[t] or 0, r[0] if isinstance(r[0], int) else 0), reverse=True)
        maximum = self.state.page_max.get(endpoint.name, endpoint.limit)
        limit = params.get("limit", DEFAULT_LIMIT)
        limit = limit if isinstance(limit, int) and limit > 0 else DEFAULT_LIMIT
        return rows[: min(limit, maximum)]


def history(model: Any, name: str) -> list[list[Any]]:
    """The model's history rows for endpoint ``name``, in the REST layouts (rest.md §3)."""
    if name == "orders-hist":
        return [L.ORDER.array(o) for o in model.closed_orders.values()]
    if name == "trades-hist":
        return [L.TRADE.array(t) for t in model.trades.values()]
    if name == "ledgers-hist":
        return [L.LEDGER.array(e) for e in model.ledger]
    if name == "positions-hist":
        return [L.POSITION.array(p) for p in model.closed_positions.values()]
    if name == "positions-audit":
        return [
            L.POSITION.array(p)
            for p in [*model.closed_positions.values(), *model.positions.values()]
        ]
    if name == "funding-trades-hist":
        return [L.FUNDING_TRADE.array(t) for t in model.funding_trades.values()]
    if name == "funding-offers-hist":
        return [L.FUNDING_OFFER.array(o) for o in model.closed_funding["offer"].values()]
    if name == "funding-credits-hist":
        return [L.FUNDING_CREDIT.array(c) for c in model.closed_funding["credit"].values()]
    if name == "funding-loans-hist":
        return [L.FUNDING_LOAN.array(c) for c in model.closed_funding["loan"].values()]
    if name == "movements-hist":
        return [L.MOVEMENT.array(m) for m in model.movements]
    return []


async def serve_rest(
    api: RestApi,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until cancelled; ``await nursery.start(...)`` returns the bound port."""

    async def started(*, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        await serve_asgi(api, f"{host}:{port}", task_status=task_status)

    async with trio.open_nursery() as nursery:
        api.state.port = await nursery.start(started)
        task_status.started(api.state.port)
