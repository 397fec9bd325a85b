"""Serving inside trio: WebSockets (the simulator, the replay server) and small ASGI apps on
hypercorn's trio worker (the simulator's REST API, metrics and health): start listening,
report the port."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, TypeVar

import outcome
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


T = TypeVar("T")


async def serve_asgi_in_thread(
    app: Any,
    bind: str,
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` like :func:`serve_asgi`, but from a thread of its own running its own
    trio loop, until cancelled (the thread has stopped when this returns).

    Why: an HTTP request costs connection handling, parsing and the app's own work; served in
    the caller's loop, each one took a turn that the caller's tasks (the sockets' receive
    loops) waited for. The app reaches the caller's loop only through :func:`call_in`."""
    started = trio.Event()
    home = trio.lowlevel.current_trio_token()
    port: list[int] = []
    stop: list[tuple[trio.lowlevel.TrioToken, trio.CancelScope]] = []
    stopping = threading.Event()

    async def serve() -> None:
        with trio.CancelScope() as scope:
            stop.append((trio.lowlevel.current_trio_token(), scope))
            if stopping.is_set():  # cancelled before the scope was known
                scope.cancel()
            async with trio.open_nursery() as nursery:
                port.append(await nursery.start(partial(serve_asgi, app, bind)))
                home.run_sync_soon(started.set)

    async with trio.open_nursery() as nursery:
        # Not abandoned on cancel: the caller returns once the thread has stopped serving.
        nursery.start_soon(partial(trio.to_thread.run_sync, trio.run, serve))
        try:
            await started.wait()
            task_status.started(port[0])
            await trio.sleep_forever()
        finally:
            stopping.set()  # then read ``stop``: the thread writes it, then reads the flag
            for token, scope in stop:
                with contextlib.suppress(trio.RunFinishedError):  # it ended on its own
                    token.run_sync_soon(scope.cancel)


async def call_in(token: trio.lowlevel.TrioToken, fn: Callable[[], T]) -> T:
    """Run ``fn`` in the thread of another trio loop (``token``'s) and await its result here,
    without blocking this loop's thread. Raises ``trio.RunFinishedError`` when that loop has
    ended."""
    here = trio.lowlevel.current_trio_token()
    done = trio.Event()
    result: list[outcome.Outcome[T]] = []

    def there() -> None:
        result.append(outcome.capture(fn))
        here.run_sync_soon(done.set)

    token.run_sync_soon(there)
    await done.wait()
    return result[0].unwrap()


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
