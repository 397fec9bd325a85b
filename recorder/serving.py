"""Serving WebSockets (the simulator, the replay server): start listening, report the port."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

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
