"""A TCP proxy in front of PostgreSQL that can make a commit's outcome unknown to the client.

Armed, it watches the client's bytes: after a ``COPY events`` it forwards the next ``COMMIT``,
waits for the server's reply (so the commit did happen), swallows it, and cuts both
connections. The client sees a lost connection and cannot know whether its batch landed:
exactly the ambiguous commit a network blip makes. New connections are forwarded untouched.
"""

from __future__ import annotations

import trio


class CommitCutter:
    def __init__(self, upstream: tuple[str, int] = ("127.0.0.1", 5432)) -> None:
        self.upstream = upstream
        self.armed = False
        self.cuts = 0
        self.port = 0

    def arm(self) -> None:
        self.armed = True

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            task_status.started(self.port)
            await trio.serve_listeners(self._handle, listeners, handler_nursery=nursery)

    async def _handle(self, client: trio.SocketStream) -> None:
        server = await trio.open_tcp_stream(*self.upstream)
        cut, replied = trio.Event(), trio.Event()
        async with client, server, trio.open_nursery() as nursery:

            async def downstream() -> None:
                while data := await server.receive_some(65536):
                    if cut.is_set():
                        replied.set()  # the commit's reply: swallowed
                        return
                    await client.send_all(data)

            async def upstream() -> None:
                saw_copy = False
                while data := await client.receive_some(65536):
                    saw_copy = saw_copy or (self.armed and b"COPY events" in data)
                    if saw_copy and b"COMMIT" in data:
                        self.armed = False
                        self.cuts += 1
                        cut.set()
                        await server.send_all(data)
                        return
                    await server.send_all(data)

            nursery.start_soon(downstream)
            await upstream()
            if cut.is_set():
                with trio.fail_after(10):  # the server answered: the commit happened
                    await replied.wait()
            nursery.cancel_scope.cancel()
