"""The connection boundary: trio-websocket errors become :class:`ConnectionLost` or
:class:`HandshakeFailed`, so the session and supervisor never import trio-websocket to catch.

:class:`Connector` is what a session uses to open a WebSocket. The real one dials the URL;
tests substitute one that wires a session to an in-memory simulator.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Protocol

import trio
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    ConnectionTimeout,
    DisconnectionTimeout,
    HandshakeError,
    open_websocket_url,
)

from recorder.causes import behind


class ConnectionLost(Exception):
    def __init__(self, code: int | None, reason: str | None) -> None:
        self.code = code
        self.reason = reason
        super().__init__(f"connection closed (code {code}{', ' + reason if reason else ''})")


class HandshakeFailed(Exception):
    def __init__(self, status: int | None, detail: str) -> None:
        self.status = status
        super().__init__(detail)


class WebSocket(Protocol):
    async def get_message(self) -> str | bytes: ...
    async def send_message(self, message: str | bytes) -> None: ...
    async def aclose(self, code: int = 1000, reason: str | None = None) -> None: ...


Connector = Callable[[str], AbstractAsyncContextManager[Any]]
"""Opens a WebSocket to a URL; the real one is :func:`connect`."""


def _lost(exc: ConnectionClosed) -> ConnectionLost:
    reason = exc.reason
    return ConnectionLost(reason.code if reason else None, reason.reason if reason else None)


class Socket:
    """Wraps a trio-websocket connection and maps its errors."""

    def __init__(self, ws: WebSocket) -> None:
        self._ws = ws
        # trio-websocket's reader task puts each message it has read into this channel, and
        # ``get_message`` takes one with two checkpoints (a scheduler pass each). When a
        # burst has queued many, ``take_buffered`` takes the next without them. The channel
        # is the library's (not public API): a version without it just has nothing to take.
        channel = getattr(ws, "_recv_channel", None)
        self._queued = channel if isinstance(channel, trio.MemoryReceiveChannel) else None

    async def get_message(self) -> str | bytes:
        try:
            return await self._ws.get_message()
        except ConnectionClosed as exc:
            raise _lost(exc) from exc

    def take_buffered(self) -> str | bytes | None:
        """The next message the socket has already read, or None when there is none (or
        the connection has ended: the next ``get_message`` raises why). Never waits and
        never checkpoints, so a caller may not lose a message to a cancellation here."""
        if self._queued is None:
            return None
        try:
            message: str | bytes = self._queued.receive_nowait()
        except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
            return None
        return message

    async def send_message(self, message: str) -> None:
        try:
            await self._ws.send_message(message)
        except ConnectionClosed as exc:
            raise _lost(exc) from exc

    async def aclose(self, code: int = 1000, reason: str | None = None) -> None:
        with trio.move_on_after(2):
            await self._ws.aclose(code, reason)


def _cause(exc: BaseException) -> str:
    """What is behind a handshake error: the OS error (connection refused, no route, ...)
    when there is one, else the deepest error's own text."""
    first = ""
    for seen in behind(exc):
        if isinstance(seen, OSError) and seen.strerror:
            return seen.strerror
        first = first or str(seen)
    return first or type(exc).__name__


# The largest message read (trio-websocket's default, 1 MiB, is below an order snapshot of
# 10,000 orders: about 2 MB; the exchange sends it again after every reconnect, so the
# account looped). 64 MiB: 32 times that, and still a bound on what one frame may cost.
MAX_FRAME_BYTES = 64 * 1024 * 1024
# Bytes trio-websocket's reader asks its stream for at once (its default is 4 KiB: about 20
# frames of 200 bytes). Behind in a burst, the socket holds far more than that, and each read
# costs a system call, a scheduler pass of the reader task and a wsproto pass. Measured over
# plain ws:// on loopback, 300,000-frame bursts: about 8 % less CPU per frame on SQLite, none
# on PostgreSQL (benchmarks/NOTES.md); a bare client, which keeps up with the sender, gained
# nothing. Over wss:// trio's TLS stream reads the socket 64 KiB at a time already and hands
# out at most one TLS record (16 KiB) a read, so there it saves reads, not system calls (not
# measured). A read still returns as soon as anything has arrived.
RECEIVE_BUFFER = 64 * 1024
# Close codes of a message the library could not deliver (the session marks them).
UNDELIVERABLE = {1007: "invalid UTF-8 in a text frame", 1009: "message over the size limit"}


@asynccontextmanager
async def connect(url: str, *, max_frame_bytes: int = MAX_FRAME_BYTES) -> AsyncIterator[Socket]:
    """Open ``url``; handshake problems (HTTP 429, refused, timeouts) become HandshakeFailed."""
    try:
        async with open_websocket_url(
            url,
            message_queue_size=2048,
            max_message_size=max_frame_bytes,
            receive_buffer_size=RECEIVE_BUFFER,
        ) as ws:
            yield Socket(ws)
    except ConnectionRejected as exc:
        raise HandshakeFailed(
            exc.status_code, f"handshake rejected: HTTP {exc.status_code}"
        ) from exc
    except (HandshakeError, ConnectionTimeout, DisconnectionTimeout) as exc:
        raise HandshakeFailed(None, f"handshake failed: {_cause(exc)}") from exc
    except OSError as exc:
        raise HandshakeFailed(
            None, f"cannot connect: {exc.strerror or type(exc).__name__}"
        ) from exc
