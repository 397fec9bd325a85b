"""``bfx-recorder serve-replay``: the recorded account, served as the exchange served it.

A Bitfinex client (a bot under test) connects here instead of the exchange. It gets ``info``;
``conf`` and ``ping`` are answered; ``auth`` is checked like the exchange does when
credentials were given (unknown key, bad signature, nonce not above the last one: ``FAILED``
with the real code) and accepted otherwise. Then the recorded chanId 0 frames of one recorded
session are sent verbatim, with their original spacing divided by ``speed`` (0: as fast as
possible); frames recorded as malformed are not sent. Where the recording has a disconnect,
the client's connection is closed with code 1012 (as the exchange does after 20051), and the
next recorded session is served when the client reconnects and authenticates again. After
the last session the connection stays open and idle. One client at a time.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
import sqlalchemy as sa
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest

from recorder.logs import log_fields
from recorder.protocol import exchange
from recorder.protocol.exchange import AuthChecker
from recorder.serving import listen
from recorder.store.eventlog import EventLog, Within
from recorder.store.sessions import user_ids

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RecordedSession:
    id: int
    user_id: int | None


def recorded_sessions(
    engine: sa.Engine, account: str, start: datetime | None, end: datetime | None
) -> list[RecordedSession]:
    """Sessions with at least one chanId 0 frame in the range, in order."""
    ids = EventLog(engine).sessions_with_frames(account, start, end)
    users = user_ids(engine, ids)
    return [RecordedSession(i, users.get(i)) for i in ids]


def session_frames(
    engine: sa.Engine, session_id: int, start: datetime | None, end: datetime | None
) -> Iterator[tuple[datetime, str]]:
    within = Within(session_id=session_id, chan0_only=True, start=start, end=end)
    for r in EventLog(engine).iterate(None, within=within, page=2000):
        assert r.received_at is not None
        yield r.received_at, r.frame


class ReplayServer:
    def __init__(
        self,
        engine: sa.Engine,
        account: str,
        *,
        start: datetime | None = None,
        end: datetime | None = None,
        speed: float = 1.0,
        api_keys: dict[str, str] | None = None,
    ) -> None:
        self.engine = engine
        self.account = account
        self.start = start
        self.end = end
        self.speed = speed
        self.auth = AuthChecker(api_keys) if api_keys is not None else None
        self.sessions = recorded_sessions(engine, account, start, end)
        self.next_session = 0
        self.sent_log: list[tuple[int, str]] = []  # (connection number, text)
        self.connections = 0
        self.frames_sent = 0
        self._busy = False
        self.port: int | None = None

    async def serve(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        async with trio.open_nursery() as nursery:
            self.port = await listen(nursery, self._handle, host, port)
            task_status.started(self.port)

    async def _handle(self, request: WebSocketRequest) -> None:
        if self._busy:
            await request.reject(503, body=b"one client at a time")
            return
        self._busy = True
        try:
            ws = await request.accept()
            self.connections += 1
            await self._converse(ws, self.connections)
        except ConnectionClosed:
            pass
        finally:
            self._busy = False

    async def _send(self, ws: WebSocketConnection, conn: int, text: str) -> None:
        await ws.send_message(text)
        self.sent_log.append((conn, text))

    async def _converse(self, ws: WebSocketConnection, conn: int) -> None:
        await self._send(ws, conn, orjson.dumps(exchange.info_event(str(uuid.uuid4()))).decode())
        async with trio.open_nursery() as nursery:
            while True:
                try:
                    text = await ws.get_message()
                except ConnectionClosed:
                    nursery.cancel_scope.cancel()
                    return
                try:
                    msg = orjson.loads(text)
                except orjson.JSONDecodeError:
                    continue
                if not isinstance(msg, dict):
                    continue
                ev = msg.get("event")
                if ev == "ping":
                    reply = exchange.pong(msg, int(time.time() * 1000))
                    await self._send(ws, conn, orjson.dumps(reply).decode())
                elif ev == "conf":
                    reply, _ = exchange.conf_reply(msg)
                    await self._send(ws, conn, orjson.dumps(reply).decode())
                elif ev == "auth":
                    failure = self._check_auth(msg)
                    if failure:
                        reply = exchange.auth_failed(*failure)
                        await self._send(ws, conn, orjson.dumps(reply).decode())
                        continue
                    nursery.start_soon(self._play, ws, conn)

    def _check_auth(self, msg: dict[str, Any]) -> tuple[int, str] | None:
        return None if self.auth is None else self.auth.check(msg)

    async def _play(self, ws: WebSocketConnection, conn: int) -> None:
        if self.next_session >= len(self.sessions):
            session = RecordedSession(0, None)
            frames: Iterator[tuple[datetime, str]] = iter(())
        else:
            session = self.sessions[self.next_session]
            self.next_session += 1
            frames = session_frames(self.engine, session.id, self.start, self.end)
        ok = exchange.auth_ok(session.user_id or 0, str(uuid.uuid4()), {})
        await self._send(ws, conn, orjson.dumps(ok).decode())
        origin: datetime | None = None
        t0 = trio.current_time()
        for received_at, text in frames:
            if self.speed > 0:
                if origin is None:
                    origin = received_at
                await trio.sleep_until(t0 + (received_at - origin).total_seconds() / self.speed)
            await self._send(ws, conn, text)
            self.frames_sent += 1
        log_fields(
            log,
            "replayed session",
            session=session.id,
            connection=conn,
            remaining=len(self.sessions) - self.next_session,
        )
        if self.next_session < len(self.sessions):
            # The recording has a disconnect here: make the client reconnect, as after 20051.
            await ws.aclose(1012, "Service Restart")
