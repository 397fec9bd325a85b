"""Serving inside trio: WebSockets (the simulator, the replay server) and small ASGI apps on
hypercorn's trio worker (the simulator's REST API, metrics and health): start listening,
report the port."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import trio
from trio_websocket import WebSocketRequest, serve_websocket


async def listen(
    nursery: trio.Nursery,
    handler: Callable[[WebSocketRequest], Awaitable[None]],
    host: str,
    port: int,
) -> int:
    """Serve ``handler`` on ``host:port`` inside ``nursery``; returns the bound port (port 0
    picks a free one)."""
    server = await nursery.start(
        lambda task_status: serve_websocket(
            handler, host, port, ssl_context=None, task_status=task_status
        )
    )
    return int(server.port)


async def serve_asgi(
    app: Any,
    bind: str,
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the ASGI ``app`` on ``bind`` ("host:port", port 0 picks one) with hypercorn's
    trio worker until cancelled; ``nursery.start`` returns the bound port."""
    from hypercorn.config import Config as HypercornConfig
    from hypercorn.trio import serve

    config = HypercornConfig()
    config.bind = [bind]
    config.accesslog = None
    config.errorlog = None

    async def started(
        *, task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED
    ) -> None:
        await serve(app, config, task_status=task_status, mode="asgi")

    async with trio.open_nursery() as nursery:
        binds = await nursery.start(started)
        task_status.started(int(binds[0].rsplit(":", 1)[1]))


async def is_http(
    scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]
) -> bool:
    """Whether an ASGI scope is an HTTP request for the app to answer. A lifespan scope is
    answered here (nothing to start or stop); any other kind is ignored."""
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
    return bool(scope["type"] == "http")


async def _lifespan(receive: Callable[..., Any], send: Callable[..., Any]) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
