"""A REST host of the test's own, on loopback, that misbehaves the way real ones do.

Modes:
- ``closed``: a port that refuses connections (bound once, then closed).
- ``hang``: accepts and never answers (reads nothing, keeps the socket open).
- ``trickle``: 200 and headers at once, then the body ``[]`` a byte every ``trickle_every`` s.
- ``html502``: a proxy's HTML 502 page.
- ``malformed``: 200 with a body that is not JSON.
- ``shapes``: 200 with JSON of the wrong shape, a different one each request.
- ``ratelimit``: 429 with the exchange's rate-limit error body, every time.
- ``ok``: 200 ``[]`` (the permissions endpoint: a read-only key).
"""

from __future__ import annotations

import socket

import h11
import trio

SHAPES = [b'{"a":1}', b"[[]]", b'[["x","y","z"]]', b"[[1e400]]", b"[null]", b'"text"']
READ_ONLY = b'[["account",1,0],["orders",1,0],["history",1,0]]'


class RestFault:
    def __init__(self, mode: str, *, trickle_every: float = 2.0) -> None:
        self.mode = mode
        self.trickle_every = trickle_every
        self.requests: list[tuple[str, bytes]] = []
        self.connections = 0
        self.port = 0
        self._shape = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v2"

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        if self.mode == "closed":
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                self.port = s.getsockname()[1]
            task_status.started(self.port)
            await trio.sleep_forever()
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            task_status.started(self.port)
            await trio.serve_listeners(self._handle, listeners, handler_nursery=nursery)

    async def _handle(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        if self.mode == "hang":
            await trio.sleep_forever()
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                request = await self._read_request(stream, conn)
                if request is None:
                    return
                await self._answer(stream, conn, *request)
                if conn.our_state is h11.MUST_CLOSE:
                    return
                conn.start_next_cycle()
        except (trio.BrokenResourceError, trio.ClosedResourceError, h11.ProtocolError):
            return
        finally:
            await stream.aclose()

    async def _read_request(
        self, stream: trio.SocketStream, conn: h11.Connection
    ) -> tuple[str, bytes] | None:
        path, body = "", b""
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await stream.receive_some(65536)
                if not data:
                    return None
                conn.receive_data(data)
            elif isinstance(event, h11.Request):
                path = event.target.decode().removeprefix("/v2/")
            elif isinstance(event, h11.Data):
                body += bytes(event.data)
            elif isinstance(event, h11.EndOfMessage):
                self.requests.append((path, body))
                return path, body
            elif isinstance(event, h11.ConnectionClosed):
                return None

    async def _answer(
        self, stream: trio.SocketStream, conn: h11.Connection, path: str, _body: bytes
    ) -> None:
        status, ctype, payload = 200, b"application/json", b"[]"
        if self.mode == "html502":
            status, ctype = 502, b"text/html"
            payload = b"<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>"
        elif self.mode == "malformed":
            payload = b"[[1,2,"
        elif self.mode == "shapes":
            payload = SHAPES[self._shape % len(SHAPES)]
            self._shape += 1
        elif self.mode == "ratelimit":
            status, payload = 429, b'["error",11010,"ratelimit: error"]'
        elif self.mode == "ok" and path == "auth/r/permissions":
            payload = READ_ONLY
        headers = [("content-type", ctype)]
        if self.mode == "trickle":
            response = h11.Response(status_code=200, headers=[*headers, ("content-length", "2")])
            await stream.send_all(conn.send(response))
            for byte in payload:
                await trio.sleep(self.trickle_every)
                await stream.send_all(conn.send(h11.Data(data=bytes([byte]))))
        else:
            length = ("content-length", str(len(payload)))
            await stream.send_all(
                conn.send(h11.Response(status_code=status, headers=[*headers, length]))
            )
            await stream.send_all(conn.send(h11.Data(data=payload)))
        await stream.send_all(conn.send(h11.EndOfMessage()))
