"""``bfx-recorder serve-replay``: the recorded account, served as the exchange served it, to
as many bots at once as connect, each its own replay.

A Bitfinex client (a bot under test) connects here instead of the exchange. It gets ``info``;
``conf`` and ``ping`` are answered; ``auth`` is checked like the exchange does when
credentials were given (unknown key, bad signature, nonce not above the last one: ``FAILED``
with the real code) and accepted otherwise. A second ``auth`` on the connection gets the
exchange's refusal (``FAILED``, 10100), never a second replay. Orders and other requests
(``[0, "on", ...]``) get the exchange's error notification and change nothing; a subscription
to a public channel gets error 10300; anything else is ignored.

Each authenticated client gets its own replay (a *run*) of the range: the recorded chanId 0
frames of one recorded session after another, verbatim, with their original spacing divided
by the speed (0: as fast as possible). Where the recording has a disconnect, the connection is
closed with code 1012 (as the exchange does after 20051) and the run goes on with the next
session when the client reconnects and authenticates again: a reconnect from the same host
with the same API key and range within :data:`RESUME_WITHIN` seconds continues the oldest run
waiting for one (bots that share a host, a key and a range and reconnect together may trade
places: give each bot its own key; any key is accepted without ``--api-key``). After the last
session the connection stays open with heartbeats, or with ``loop`` the run starts again.

A run starting at a time inside a session (``from``) first gets what the exchange sends after
an auth, built from the record as of that time (:mod:`recorder.replay.snapshots`); those
synthetic frames are named in the server's log, never written to the event log.

With ``rest_frames`` (``rest=1``) a run also gets, after each recorded reconnect, what the
record learned only from REST about the gap (its fills, with their ``wu`` where the ledger
carries them, and orders closed during it) as the frames the exchange would have sent
(:mod:`recorder.replay.gapfill`), before the next session's recorded frames.

Range, speed, loop and rest are the server's defaults and may be chosen per connection in the
URL: ``ws://host:port/ws/2?from=2026-12-01T10:00:00Z&to=...&speed=0&loop=1&rest=1``.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
import sqlalchemy as sa
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest

from recorder.logs import log_fields
from recorder.protocol import exchange
from recorder.protocol.exchange import AuthChecker
from recorder.replay.gapfill import AFTER_LAST, gap_frames
from recorder.replay.snapshots import snapshot_frames
from recorder.serving import listen
from recorder.store.eventlog import EventLog, Within
from recorder.store.schema import sessions as sessions_table

log = logging.getLogger(__name__)

RESUME_WITHIN = 60.0  # seconds a run waits for its client to reconnect after a 1012
HEARTBEAT_EVERY = 15.0  # seconds of silence before [0,"hb"], as the exchange
REFUSED = exchange.auth_failed(10100, "auth: dup")  # a second auth on one connection
# Requests a client may send on chanId 0 (orders, funding offers, ...): never executed.
REQUESTS = frozenset(
    {"on", "ou", "oc", "oc_multi", "ox_multi", "fon", "foc", "fon_multi", "foc_multi", "calc"}
)


@dataclass(frozen=True)
class RecordedSession:
    id: int
    user_id: int | None
    authenticated_at: datetime | None = None


def recorded_sessions(
    engine: sa.Engine, account: str, start: datetime | None, end: datetime | None
) -> list[RecordedSession]:
    """Sessions with at least one chanId 0 frame in the range, in order."""
    ids = EventLog(engine).sessions_with_frames(account, start, end)
    s = sessions_table.c
    with engine.connect() as conn:
        found = {
            int(r.id): r
            for r in conn.execute(
                sa.select(s.id, s.user_id, s.authenticated_at).where(s.id.in_(ids))
            )
        }
    out = []
    for i in ids:
        r = found.get(i)
        at = r.authenticated_at if r is not None else None
        if at is not None and at.tzinfo is None:
            at = at.replace(tzinfo=UTC)
        out.append(RecordedSession(i, r.user_id if r is not None else None, at))
    return out


def session_frames(
    engine: sa.Engine, session_id: int, start: datetime | None, end: datetime | None
) -> Iterator[tuple[datetime, str]]:
    within = Within(session_id=session_id, chan0_only=True, start=start, end=end)
    for r in EventLog(engine).iterate(None, within=within, page=2000):
        assert r.received_at is not None
        yield r.received_at, r.frame


class BadRequest(ValueError):
    """A query parameter the server cannot use (the connection is refused with HTTP 400)."""


@dataclass(frozen=True)
class Plan:
    """What a run replays: the range, the speed, and whether it starts again at the end."""

    start: datetime | None = None
    end: datetime | None = None
    speed: float = 1.0
    loop: bool = False
    rest_frames: bool = False  # the gaps' REST-learned fills and closes as frames

    def with_query(self, path: str) -> Plan:
        """This plan with the URL's ``from``, ``to``, ``speed`` and ``loop``."""
        query = parse_qs(urlsplit(path).query)
        plan = self
        for name, values in query.items():
            value = values[-1]
            if name in ("from", "to"):
                try:
                    t = datetime.fromisoformat(value.replace("Z", "+00:00"))
                except ValueError:
                    raise BadRequest(f"{name}={value!r} is not an ISO 8601 time") from None
                t = t if t.tzinfo else t.replace(tzinfo=UTC)
                plan = replace(plan, start=t) if name == "from" else replace(plan, end=t)
            elif name == "speed":
                try:
                    speed = float(value)
                except ValueError:
                    raise BadRequest(f"speed={value!r} is not a number") from None
                if not speed >= 0:
                    raise BadRequest("speed must be 0 (as fast as possible) or more")
                plan = replace(plan, speed=speed)
            elif name == "loop":
                plan = replace(plan, loop=value.lower() in ("1", "true", "yes"))
            elif name == "rest":
                plan = replace(plan, rest_frames=value.lower() in ("1", "true", "yes"))
            else:
                raise BadRequest(f"unknown parameter {name!r} (from, to, speed, loop, rest)")
        if plan.start and plan.end and plan.end <= plan.start:
            raise BadRequest("to must be after from")
        return plan


@dataclass
class Run:
    """One replay of a plan's sessions, across the client's reconnects."""

    plan: Plan
    sessions: list[RecordedSession]
    next: int = 0
    laps: int = 0
    frames: int = 0


@dataclass
class _Waiting:
    runs: deque[tuple[float, Run]] = field(default_factory=deque)


class ReplayServer:
    def __init__(
        self,
        engine: sa.Engine,
        account: str,
        *,
        start: datetime | None = None,
        end: datetime | None = None,
        speed: float = 1.0,
        loop: bool = False,
        rest_frames: bool = False,
        api_keys: dict[str, str] | None = None,
    ) -> None:
        self.engine = engine
        self.account = account
        self.plan = Plan(start, end, speed, loop, rest_frames)
        self._gaps: dict[tuple[Any, Any], dict[int, list[str]]] = {}
        self.auth = AuthChecker(api_keys) if api_keys is not None else None
        self.sessions = recorded_sessions(engine, account, start, end)
        self._sessions: dict[tuple[Any, Any], list[RecordedSession]] = {(start, end): self.sessions}
        self._waiting: dict[tuple[Any, ...], _Waiting] = {}
        self.connections = 0
        self.runs = 0
        self.sessions_served = 0
        self.frames_sent = 0
        self.synthetic_sent = 0
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

    # --- connections ----------------------------------------------------------------------------

    async def _handle(self, request: WebSocketRequest) -> None:
        try:
            plan = self.plan.with_query(request.path)
        except BadRequest as exc:
            await request.reject(400, body=str(exc).encode())
            return
        try:
            ws = await request.accept()
        except ConnectionClosed:
            return
        self.connections += 1
        conn = self.connections
        peer = getattr(ws.remote, "address", str(ws.remote))
        with contextlib.suppress(ConnectionClosed):
            await self._converse(ws, conn, plan, peer)

    async def _send(self, ws: WebSocketConnection, text: str) -> None:
        await ws.send_message(text)

    async def _converse(self, ws: WebSocketConnection, conn: int, plan: Plan, peer: str) -> None:
        await self._send(ws, orjson.dumps(exchange.info_event(str(uuid.uuid4()))).decode())
        authenticated = False
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
                    continue  # garbage: ignored, as the exchange does
                if isinstance(msg, list):
                    await self._request(ws, msg)
                    continue
                if not isinstance(msg, dict):
                    continue
                ev = msg.get("event")
                if ev == "ping":
                    reply = exchange.pong(msg, int(time.time() * 1000))
                    await self._send(ws, orjson.dumps(reply).decode())
                elif ev == "conf":
                    reply, _ = exchange.conf_reply(msg)
                    await self._send(ws, orjson.dumps(reply).decode())
                elif ev == "subscribe":
                    refusal = {
                        "event": "error",
                        "msg": "subscribe: the replay serves the account channel only",
                        "code": 10300,
                    }
                    await self._send(ws, orjson.dumps(refusal).decode())
                elif ev == "auth":
                    if authenticated:
                        await self._send(ws, orjson.dumps(REFUSED).decode())
                        continue
                    failure = self._check_auth(msg)
                    if failure:
                        reply = exchange.auth_failed(*failure)
                        await self._send(ws, orjson.dumps(reply).decode())
                        continue
                    authenticated = True
                    key = (peer, str(msg.get("apiKey", "")), plan)
                    run = self._resume(key) or self._new_run(plan)
                    nursery.start_soon(self._play, ws, conn, run, key)

    async def _request(self, ws: WebSocketConnection, msg: list[Any]) -> None:
        """``[0, "on", null, {...}]``: the exchange's error notification; nothing happens."""
        if len(msg) < 2 or msg[0] != 0 or msg[1] not in REQUESTS:
            return
        note = [
            int(time.time() * 1000),
            f"{msg[1]}-req",
            None,
            None,
            None,
            None,
            "ERROR",
            "replay: requests are not executed (a recording is being replayed)",
        ]
        await self._send(ws, orjson.dumps([0, "n", note]).decode())

    def _check_auth(self, msg: dict[str, Any]) -> tuple[int, str] | None:
        return None if self.auth is None else self.auth.check(msg)

    # --- runs ---------------------------------------------------------------------------------

    def _new_run(self, plan: Plan) -> Run:
        found = self._sessions.get((plan.start, plan.end))
        if found is None:
            found = recorded_sessions(self.engine, self.account, plan.start, plan.end)
            if len(self._sessions) < 64:
                self._sessions[(plan.start, plan.end)] = found
        self.runs += 1
        return Run(plan, found)

    async def _gap_frames(self, run: Run) -> dict[int, list[str]]:
        key = (run.plan.start, run.plan.end)
        found = self._gaps.get(key)
        if found is None:
            found = await trio.to_thread.run_sync(
                gap_frames, self.engine, self.account, run.sessions, run.plan.start, run.plan.end
            )
            if len(self._gaps) < 64:
                self._gaps[key] = found
        return found

    def _resume(self, key: tuple[Any, ...]) -> Run | None:
        waiting = self._waiting.get(key)
        now = trio.current_time()
        while waiting and waiting.runs:
            since, run = waiting.runs.popleft()
            if now - since <= RESUME_WITHIN:
                return run
        return None

    def _park(self, key: tuple[Any, ...], run: Run) -> None:
        self._waiting.setdefault(key, _Waiting()).runs.append((trio.current_time(), run))

    async def _play(
        self, ws: WebSocketConnection, conn: int, run: Run, key: tuple[Any, ...]
    ) -> None:
        """One session of ``run`` to this connection; a client that goes away mid-stream
        ends only its own connection (the run waits for it no longer)."""
        with contextlib.suppress(ConnectionClosed):
            await self._play_run(ws, conn, run, key)

    async def _play_run(
        self, ws: WebSocketConnection, conn: int, run: Run, key: tuple[Any, ...]
    ) -> None:
        plan = run.plan
        first = run.next == 0
        session = run.sessions[run.next] if run.next < len(run.sessions) else None
        ok = exchange.auth_ok((session.user_id if session else None) or 0, str(uuid.uuid4()), {})
        await self._send(ws, orjson.dumps(ok).decode())
        if session is None:
            await self._idle(ws)  # a range with no frames: auth OK, then heartbeats
            return
        run.next += 1
        self.sessions_served += 1
        if (
            first
            and plan.start is not None
            and (session.authenticated_at is None or session.authenticated_at < plan.start)
        ):
            frames = await trio.to_thread.run_sync(
                snapshot_frames, self.engine, self.account, session.id, plan.start
            )
            for text in frames:
                await self._send(ws, text)
            self.synthetic_sent += len(frames)
            log_fields(
                log,
                "sent synthetic snapshots (built from the record as of the start)",
                connection=conn,
                session=session.id,
                at=plan.start.isoformat(),
                frames=len(frames),
            )
        if plan.rest_frames and not first:
            filled = (await self._gap_frames(run)).get(session.id, [])
            for text in filled:
                await self._send(ws, text)
            self.synthetic_sent += len(filled)
            if filled:
                log_fields(
                    log,
                    "sent the gap's REST-learned fills and closes as synthetic frames",
                    connection=conn,
                    session=session.id,
                    frames=len(filled),
                )
        origin: datetime | None = None
        t0 = trio.current_time()
        for received_at, text in session_frames(self.engine, session.id, plan.start, plan.end):
            if plan.speed > 0:
                if origin is None:
                    origin = received_at
                await trio.sleep_until(t0 + (received_at - origin).total_seconds() / plan.speed)
            await self._send(ws, text)
            self.frames_sent += 1
            run.frames += 1
        more = run.next < len(run.sessions)
        if plan.rest_frames and not more:
            after = (await self._gap_frames(run)).get(AFTER_LAST, [])
            for text in after:
                await self._send(ws, text)
            self.synthetic_sent += len(after)
        log_fields(
            log,
            "replayed session",
            session=session.id,
            connection=conn,
            remaining=len(run.sessions) - run.next,
        )
        if not more and plan.loop:
            run.next, run.laps, more = 0, run.laps + 1, True
        if more:
            # The recording has a disconnect here: make the client reconnect, as after 20051.
            self._park(key, run)
            await ws.aclose(1012, "Service Restart")
            return
        await self._idle(ws)

    async def _idle(self, ws: WebSocketConnection) -> None:
        """After the last session: the connection stays open, with the exchange's heartbeat."""
        while True:
            await trio.sleep(HEARTBEAT_EVERY)
            await self._send(ws, '[0,"hb"]')
