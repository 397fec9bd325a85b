"""The simulated exchange: :class:`AccountModel` served over WebSocket with the real protocol.

What a client sees is what the authenticated Bitfinex endpoint does (protocol.md): ``info``
on connect; ``conf`` accepted before or after auth; ``auth`` checked like the exchange (unknown
key, bad signature, nonce not above the key's last one, each refused with ``FAILED`` and the
real code); snapshots from the true state after every successful auth; account updates as
they happen; ``[0,"hb"]`` after 15 s without a chanId 0 frame; ``pong`` for ``ping``; with
``SEQ_ALL``, ``[0, TYPE, PAYLOAD, PUB_SEQ, AUTH_SEQ]`` (heartbeats carry the public number only,
notifications repeat the auth number). Connections over the limit (5 per 15 s) get HTTP 429.

The account keeps living while nobody is connected, so a client that reconnects has missed
frames exactly as it would have on the exchange. Every text frame put on the wire is appended
to :attr:`Simulator.sent_log`, which tests compare with what the recorder stored.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import trio
from trio_websocket import (
    ConnectionClosed,
    WebSocketConnection,
    WebSocketRequest,
)

from recorder.protocol import SEQ_ALL, exchange
from recorder.protocol import layouts as L
from recorder.protocol.exchange import AuthChecker, ConnectionWindow
from recorder.serving import listen
from recorder.simulator.faults import ScheduledFault
from recorder.simulator.model import AccountModel, Message
from recorder.simulator.rest import RestApi, RestState, serve_rest

log = logging.getLogger(__name__)

INFO_20051 = "Stop/Restart Websocket Server (please reconnect)"
INFO_20060 = (
    "Entering in Maintenance mode. Please pause any activity and resume after receiving the "
    "info message 20061 (it should take 120 seconds at most)."
)
INFO_20061 = (
    "Maintenance ended. You can resume normal activity. It is advised to unsubscribe/subscribe "
    "again all channels."
)
READ_ONLY_CAPS = {
    "orders": {"read": 1, "write": 0},
    "account": {"read": 1, "write": 0},
    "funding": {"read": 1, "write": 0},
    "history": {"read": 1, "write": 0},
    "wallets": {"read": 1, "write": 0},
    "withdraw": {"read": 0, "write": 0},
    "positions": {"read": 1, "write": 0},
}


@dataclass(frozen=True)
class SentFrame:
    conn_id: int
    text: str
    at: float  # trio time


@dataclass
class _Connection:
    id: int
    ws: WebSocketConnection
    scope: trio.CancelScope
    flags: int = 0
    authenticated: bool = False
    pub_seq: int = 0
    auth_seq: int = 0
    last_account_frame: float = 0.0
    stalled_until: float = 0.0
    seq_fault: str | None = None
    lock: trio.Lock = field(default_factory=trio.Lock)


def generated_credentials() -> tuple[str, str]:
    """A fresh key and secret for a simulated account (demo, simulate without --api-key)."""
    return f"sim-{secrets.token_hex(8)}", secrets.token_hex(24)


class Simulator:
    def __init__(
        self,
        *,
        seed: int = 0,
        rate: float = 20.0,
        api_keys: dict[str, str] | None = None,
        heartbeat_period: float = 15.0,
        connection_limit: tuple[int, float] | None = (5, 15.0),
        faults: list[ScheduledFault] | None = None,
        wall_clock: Callable[[], float] = time.time,
        close_after_20051: float = 1.0,
    ) -> None:
        self.model = AccountModel(seed=seed, clock=lambda: int(wall_clock() * 1000))
        self.rate = rate
        self.auth = AuthChecker(api_keys or {})
        self.heartbeat_period = heartbeat_period
        self.window = ConnectionWindow(*connection_limit) if connection_limit else None
        self.faults = list(faults or [])
        self.wall_clock = wall_clock
        self.close_after_20051 = close_after_20051
        self.sent_log: list[SentFrame] = []
        self.connections: dict[int, _Connection] = {}
        self.port: int | None = None
        self.connection_count = 0
        self.rejected_connections = 0
        self._paused_until = 0.0
        self._refuse_until = 0.0
        self._ids = _SeededIds(seed)
        # One account action at a time, its frames all sent before the next action's: the
        # activity loop, advance() and bursts would otherwise interleave their frames.
        self._stepping = trio.Lock()
        self.auth_events = trio.Event()  # set on every successful auth, then replaced
        self.auth_requests: list[dict[str, Any]] = []  # every auth message received
        # The REST side (simulator/rest.py, its own state): started with serve_rest().
        self.rest = RestState()
        self.caps: dict[str, Any] = READ_ONLY_CAPS  # what the auth reply says the key may do

    # --- lifecycle ----------------------------------------------------------------------------

    async def serve(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve until cancelled; ``await nursery.start(sim.serve)`` returns the bound port."""
        async with trio.open_nursery() as nursery:
            self.port = await listen(nursery, self._handle, host, port)
            nursery.start_soon(self._activity)
            for fault in self.faults:
                nursery.start_soon(self._scheduled, fault)
            task_status.started(self.port)

    async def serve_rest(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve the REST API until cancelled; ``nursery.start`` returns the bound port."""
        api = RestApi(self.rest, self.model, self.auth)
        await serve_rest(api, host, port, task_status=task_status)

    async def _activity(self) -> None:
        """Advance the account at ``rate`` frames per second, whether or not anyone listens."""
        if self.rate <= 0:
            return
        while True:
            now = trio.current_time()
            if now < self._paused_until:
                # Poll rather than sleep until the end: resume() may come sooner.
                await trio.sleep(min(0.02, self._paused_until - now))
                continue
            messages = await self._step(unless_paused=True)
            await trio.sleep(max(len(messages), 1) / self.rate)

    async def _scheduled(self, fault: ScheduledFault) -> None:
        start = trio.current_time()
        await trio.sleep_until(start + fault.at)
        while True:
            await self.inject(fault.name, fault.arg)
            if fault.every is None:
                return
            await trio.sleep(fault.every)

    # --- driving the model from tests ---------------------------------------------------------

    async def advance(self, steps: int = 1) -> int:
        """Perform ``steps`` account actions now and send their frames; returns frames sent."""
        count = 0
        for _ in range(steps):
            count += len(await self._step())
        return count

    async def _step(self, unless_paused: bool = False) -> list[Message]:
        async with self._stepping:
            # Taking the lock is a checkpoint: pause() may have come meanwhile, and a step
            # after it would change the truth a test has just read.
            if unless_paused and trio.current_time() < self._paused_until:
                return []
            messages = self.model.step()
            await self.broadcast(messages)
        return messages

    async def broadcast(self, messages: list[Message]) -> None:
        for conn in list(self.connections.values()):
            if conn.authenticated:
                for abbr, payload in messages:
                    await self._send_account(conn, abbr, payload)

    def pause(self, seconds: float = float("inf")) -> None:
        """Stop account activity for ``seconds`` (for tests that compare with the truth)."""
        self._paused_until = trio.current_time() + seconds

    async def settled(self) -> None:
        """Return once no account step is being sent: after :meth:`pause`, a step that had
        already begun may still be sending its frames; after this, nothing more is sent."""
        async with self._stepping:
            pass

    def resume(self) -> None:
        self._paused_until = 0.0

    def truth(self) -> dict[str, Any]:
        return self.model.truth()

    def truth_json(self) -> bytes:
        return orjson.dumps(self.truth(), option=orjson.OPT_INDENT_2)

    def frames_for(self, conn_id: int) -> list[str]:
        return [f.text for f in self.sent_log if f.conn_id == conn_id]

    # --- faults -------------------------------------------------------------------------------

    async def inject(self, name: str, arg: float | None = None) -> None:
        """Trigger fault ``name`` now on every open connection (see faults.FAULTS)."""
        log.info("simulator fault %s arg=%s", name, arg)
        conns = list(self.connections.values())
        if name == "maintenance":
            pause = arg if arg is not None else 5.0
            for conn in conns:
                await self._send_event(conn, {"event": "info", "code": 20060, "msg": INFO_20060})
            self._paused_until = trio.current_time() + pause
            await trio.sleep(pause)
            for conn in list(self.connections.values()):
                await self._send_event(conn, {"event": "info", "code": 20061, "msg": INFO_20061})
        elif name == "burst":
            target = int(arg or 1000)
            sent = 0
            while sent < target:
                sent += len(await self._step())
        else:
            for conn in conns:
                await self._fault_on(conn, name, arg)

    async def _fault_on(self, conn: _Connection, name: str, arg: float | None) -> None:
        if name == "drop":
            await self._close(conn, 1001, "going away")
        elif name == "drop-silent":
            # End TCP without a WebSocket close frame: the client sees an abnormal closure.
            stream = conn.ws._stream  # no public API for an unclean close
            with trio.move_on_after(1):
                await stream.aclose()
            conn.scope.cancel()
        elif name == "info-20051":
            await self._send_event(conn, {"event": "info", "code": 20051, "msg": INFO_20051})
            await trio.sleep(self.close_after_20051)
            await self._close(conn, 1012, "Service Restart")
        elif name == "stall":
            conn.stalled_until = trio.current_time() + (arg if arg is not None else 120.0)
        elif name == "malformed":
            await self._send_raw(conn, '[0,"on",{not json')
        elif name == "truncated":
            abbr, payload = self.model.snapshots()[1]
            text = orjson.dumps([0, abbr, payload]).decode()
            await self._send_raw(conn, text[: len(text) // 2])
        elif name in ("seq-skip", "seq-repeat"):
            conn.seq_fault = name
        elif name == "dirty":
            # Rows no table can hold, as an exchange might send them: an order without an
            # id, one whose id is beyond 64 bits, a wallet without a currency.
            now = int(time.time() * 1000)
            order = {
                "symbol": "tBTCUSD",
                "mts_create": now,
                "mts_update": now,
                "amount": 0.5,
                "amount_orig": 0.5,
                "order_type": "EXCHANGE LIMIT",
                "order_status": "ACTIVE",
                "price": 100.0,
            }
            await self._send_account(conn, "on", L.ORDER.array({**order, "id": None}))
            await self._send_account(
                conn, "on", L.ORDER.array({**order, "id": HUGE_ID_MARK}), (HUGE_ID_MARK, HUGE_ID)
            )
            wallet = {"wallet_type": "exchange", "currency": None, "balance": 1.5}
            await self._send_account(conn, "wu", L.WALLET.array(wallet))
        elif name == "huge":
            # One frame of ARG bytes (default 2 MB): a notification whose text is that long.
            size = int(arg or 2_000_000)
            note = [int(time.time() * 1000), "huge", None, None, None, None, "INFO", "x" * size]
            await self._send_account(conn, "n", note)
        elif name == "bad-utf8":
            # A text frame whose payload is not UTF-8 (the client closes with 1007).
            payload = b'[0,"n",["\xff\xfe"]]'
            async with conn.lock:
                with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    await conn.ws._stream.send_all(bytes([0x81, len(payload)]) + payload)
        else:
            raise ValueError(f"unknown fault {name!r}")

    # --- one connection -----------------------------------------------------------------------

    def _over_limit(self) -> bool:
        return self.window is not None and not self.window.admit(trio.current_time())

    def refuse(self, seconds: float = float("inf")) -> None:
        """Answer handshakes with HTTP 503 for ``seconds`` (as during exchange maintenance);
        ``refuse(0)`` accepts again."""
        self._refuse_until = trio.current_time() + seconds

    async def _handle(self, request: WebSocketRequest) -> None:
        if trio.current_time() < self._refuse_until:
            self.rejected_connections += 1
            await request.reject(503, body=b"Service Unavailable")
            return
        if self._over_limit():
            self.rejected_connections += 1
            await request.reject(429, body=b"Too Many Requests")
            return
        ws = await request.accept()
        self.connection_count += 1
        conn = _Connection(id=self.connection_count, ws=ws, scope=trio.CancelScope())
        self.connections[conn.id] = conn
        try:
            with conn.scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._heartbeats, conn)
                    await self._send_event(conn, exchange.info_event(self._ids.uuid()))
                    await self._receive(conn)
                    nursery.cancel_scope.cancel()
        except ConnectionClosed:
            pass
        finally:
            self.connections.pop(conn.id, None)

    async def _receive(self, conn: _Connection) -> None:
        while True:
            try:
                text = await conn.ws.get_message()
            except ConnectionClosed:
                return
            try:
                msg = orjson.loads(text)
            except orjson.JSONDecodeError:
                await self._send_event(conn, exchange.UNKNOWN_EVENT)
                continue
            if isinstance(msg, list):
                # Input messages ([0, "on", null, {...}]) are accepted but not acted upon.
                continue
            if not isinstance(msg, dict):
                continue
            event = msg.get("event")
            if event == "ping":
                if not self._stalled(conn):
                    await self._send_event(conn, exchange.pong(msg, int(self.wall_clock() * 1000)))
            elif event == "conf":
                reply, flags = exchange.conf_reply(msg)
                if flags is not None:
                    conn.flags = flags
                await self._send_event(conn, reply)
            elif event == "auth":
                await self._auth(conn, msg)
            elif event == "simulator":
                await self._control(conn, msg)
            else:
                await self._send_event(conn, exchange.UNKNOWN_EVENT)

    async def _auth(self, conn: _Connection, msg: dict[str, Any]) -> None:
        self.auth_requests.append(msg)
        if conn.authenticated:
            await self._send_event(conn, exchange.ALREADY_AUTHENTICATED)
            return
        failure = self.auth.check(msg)
        if failure is not None:
            await self._send_event(conn, exchange.auth_failed(*failure))
            return
        # Under the stepping lock: no account action can slip between the auth reply and
        # the snapshots, and the snapshots are the state right before the next update.
        async with self._stepping:
            await self._send_event(
                conn, exchange.auth_ok(self.model.user_id, self._ids.uuid(), self.caps)
            )
            conn.authenticated = True
            conn.last_account_frame = trio.current_time()
            for abbr, payload in self.model.snapshots():
                await self._send_account(conn, abbr, payload)
        self.auth_events.set()
        self.auth_events = trio.Event()

    async def _control(self, conn: _Connection, msg: dict[str, Any]) -> None:
        """Test hooks over the socket: ``{"event":"simulator","op":"truth"}`` or
        ``{"event":"simulator","op":"fault","fault":NAME,"arg":X}``."""
        op = msg.get("op")
        if op == "truth":
            await self._send_event(conn, {"event": "simulator", "truth": self.truth()})
        elif op == "fault" and isinstance(msg.get("fault"), str):
            await self._send_event(conn, {"event": "simulator", "fault": msg["fault"]})
            await self.inject(msg["fault"], msg.get("arg"))
        elif op == "advance":
            sent = await self.advance(int(msg.get("steps", 1)))
            await self._send_event(conn, {"event": "simulator", "advanced": sent})
        else:
            await self._send_event(
                conn, {"event": "error", "msg": "simulator: unknown op", "code": 10000}
            )

    async def _heartbeats(self, conn: _Connection) -> None:
        while True:
            due = conn.last_account_frame + self.heartbeat_period
            now = trio.current_time()
            if now < due or not conn.authenticated:
                await trio.sleep(max(due - now, 0.05))
                continue
            if self._stalled(conn):
                await trio.sleep_until(conn.stalled_until)
                continue
            frame: list[Any] = [0, "hb"]
            async with conn.lock:
                if conn.flags & SEQ_ALL:
                    conn.pub_seq += 1
                    frame.append(conn.pub_seq)
                try:
                    await self._put(conn, orjson.dumps(frame).decode())
                except ConnectionClosed:
                    return
                conn.last_account_frame = trio.current_time()

    # --- sending ------------------------------------------------------------------------------

    def _stalled(self, conn: _Connection) -> bool:
        return trio.current_time() < conn.stalled_until

    async def _put(self, conn: _Connection, text: str) -> None:
        """Send under the connection's lock and log what went on the wire."""
        await conn.ws.send_message(text)
        self.sent_log.append(SentFrame(conn.id, text, trio.current_time()))

    async def _send_raw(self, conn: _Connection, text: str) -> None:
        if self._stalled(conn):
            return
        async with conn.lock:
            with contextlib.suppress(ConnectionClosed):
                await self._put(conn, text)

    async def _send_event(self, conn: _Connection, event: dict[str, Any]) -> None:
        await self._send_raw(conn, orjson.dumps(event).decode())

    async def _send_account(
        self,
        conn: _Connection,
        abbr: str,
        payload: Any,
        replace: tuple[int, str] | None = None,
    ) -> None:
        """``replace``: a number in the payload written as other text (a 30-digit id, which
        no JSON library here writes)."""
        if self._stalled(conn):
            return
        async with conn.lock:
            frame: list[Any] = [0, abbr, payload]
            if conn.flags & SEQ_ALL:
                if conn.seq_fault == "seq-skip":
                    conn.pub_seq += 1
                elif conn.seq_fault == "seq-repeat":
                    conn.pub_seq -= 1
                conn.seq_fault = None
                conn.pub_seq += 1
                if abbr != "n":
                    conn.auth_seq += 1
                frame += [conn.pub_seq, conn.auth_seq]
            text = orjson.dumps(frame).decode()
            if replace is not None:
                text = text.replace(str(replace[0]), replace[1], 1)
            try:
                await self._put(conn, text)
            except ConnectionClosed:
                return
            conn.last_account_frame = trio.current_time()

    async def _close(self, conn: _Connection, code: int, reason: str) -> None:
        with trio.move_on_after(2):
            await conn.ws.aclose(code, reason)
        conn.scope.cancel()


HUGE_ID_MARK = 4_242_424_242_424_242  # stands for HUGE_ID while the frame is encoded
HUGE_ID = "123456789012345678901234567890"


class _SeededIds:
    """Deterministic UUIDs (serverId, auth_id), so equal seeds give equal frames."""

    def __init__(self, seed: int) -> None:
        import random

        self._rng = random.Random(f"ids-{seed}")

    def uuid(self) -> str:
        return str(uuid.UUID(int=self._rng.getrandbits(128), version=4))
