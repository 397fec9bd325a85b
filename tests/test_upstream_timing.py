"""Heartbeat watchdog, back-off and the connection limit, in virtual time (MockClock)."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import orjson
import pytest
import trio
import trio.testing

from recorder.config import Secret
from recorder.store.eventlog import NewEvent
from recorder.upstream.backoff import Backoff, ConnectionRateLimit
from recorder.upstream.connection import ConnectionLost
from recorder.upstream.session import Session, SessionOutcome, SessionParams
from recorder.upstream.supervisor import supervise

INFO = '{"event":"info","version":2,"platform":{"status":1}}'
AUTH_OK = '{"event":"auth","status":"OK","chanId":0,"userId":1}'


@pytest.fixture
def clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


class FakeSocket:
    """An in-memory exchange: frames queued by the test, replies by a callback."""

    def __init__(self, frames: list[str], answer_pings: int = 0) -> None:
        self.send, self.recv = trio.open_memory_channel[str](100)
        for f in frames:
            self.send.send_nowait(f)
        self.sent: list[tuple[float, str]] = []
        self.answer_pings = answer_pings
        self.closed: tuple[int, str | None] | None = None

    async def get_message(self) -> str:
        return await self.recv.receive()

    async def send_message(self, message: str) -> None:
        self.sent.append((trio.current_time(), message))
        msg = orjson.loads(message)
        if msg.get("event") == "ping" and self.answer_pings > 0:
            self.answer_pings -= 1
            await self.send.send(orjson.dumps({"event": "pong", "cid": msg["cid"]}).decode())

    async def aclose(self, code: int = 1000, reason: str | None = None) -> None:
        self.closed = (code, reason)


def make_session(sock: FakeSocket, sink: trio.MemorySendChannel[object]) -> Session:
    @asynccontextmanager
    async def connector(url: str) -> AsyncIterator[FakeSocket]:
        yield sock

    async def open_session(account: str, url: str, at: datetime) -> int:
        return 1

    async def next_nonce() -> int:
        return 1

    params = SessionParams(
        "a",
        "ws://127.0.0.1/ws/2",
        Secret("k"),
        Secret("s"),
        heartbeat_period=15.0,
        pong_timeout=10.0,
    )
    return Session(
        params,
        sink=sink,
        open_session=open_session,
        next_nonce=next_nonce,  # type: ignore[arg-type]
        connector=connector,
        now=lambda: datetime(2026, 1, 1, tzinfo=UTC),
    )


async def test_heartbeat_timeout_pings_then_ends(clock: trio.testing.MockClock) -> None:
    sink, items = trio.open_memory_channel[object](1000)
    sock = FakeSocket([INFO, AUTH_OK, '[0,"hb"]'])
    start = trio.current_time()
    outcome = await make_session(sock, sink).run()
    assert outcome.reason == "heartbeat-timeout"
    pings = [(t - start, m) for t, m in sock.sent if '"ping"' in m]
    assert [t for t, _ in pings] == [30.0]  # 2 x 15 s of silence
    assert outcome.ended is not None and outcome.ended - start == 40.0  # + 10 s without pong
    assert sock.closed == (1000, "heartbeat-timeout")
    kinds = []
    while True:
        try:
            item = items.receive_nowait()
        except trio.WouldBlock:
            break
        if isinstance(item, NewEvent):
            kinds.append(item.kind)
    assert kinds == ["recorder.connected", "info", "auth", "hb", "recorder.disconnected"]


async def test_pong_keeps_the_session_alive(clock: trio.testing.MockClock) -> None:
    sink, _items = trio.open_memory_channel[object](1000)
    sock = FakeSocket([INFO, AUTH_OK], answer_pings=2)
    start = trio.current_time()
    outcome = await make_session(sock, sink).run()
    pings = [t - start for t, m in sock.sent if '"ping"' in m]
    # Each pong is a frame, so the watchdog restarts: pings at 30, 60, 90; no pong to the third.
    assert pings == [30.0, 60.0, 90.0]
    assert outcome.reason == "heartbeat-timeout"
    assert outcome.ended is not None and outcome.ended - start == 100.0


async def test_exchange_close_is_recorded_as_closed(clock: trio.testing.MockClock) -> None:
    sink, _items = trio.open_memory_channel[object](1000)

    class Closing(FakeSocket):
        async def get_message(self) -> str:
            try:
                return self.recv.receive_nowait()
            except trio.WouldBlock:
                raise ConnectionLost(1006, None) from None

    outcome = await make_session(Closing([INFO, AUTH_OK]), sink).run()
    assert (outcome.reason, outcome.authenticated) == ("closed", True)


class FakeSession:
    def __init__(self, outcome: SessionOutcome, lasts: float) -> None:
        self.outcome = outcome
        self.lasts = lasts

    async def run(self) -> SessionOutcome:
        self.outcome.started = trio.current_time()
        await trio.sleep(self.lasts)
        self.outcome.ended = trio.current_time()
        return self.outcome


async def test_backoff_full_jitter_capped_and_reset(clock: trio.testing.MockClock) -> None:
    starts: list[float] = []
    plan = [SessionOutcome(reason="closed") for _ in range(8)]
    plan[5] = SessionOutcome(reason="closed", authenticated=True)  # a healthy session
    plan.append(SessionOutcome(reason="auth-failed", final=True, auth_code=10100))
    durations = [0, 0, 0, 0, 0, 100, 0, 0, 0]
    it = iter(zip(plan, durations, strict=True))

    def make() -> FakeSession:
        starts.append(trio.current_time())
        outcome, lasts = next(it)
        return FakeSession(outcome, lasts)

    backoff = Backoff(base=1.0, cap=8.0, rng=random.Random(5))
    expected_rng = random.Random(5)
    final = await supervise(
        "a",
        make,
        backoff=backoff,  # type: ignore[arg-type]
        rate_limit=ConnectionRateLimit(1000, 1.0),
    )
    assert final.final and final.auth_code == 10100
    gaps = [b - a - d for a, b, d in zip(starts, starts[1:], durations, strict=False)]
    ceilings = [1, 2, 4, 8, 8, 1, 2, 4]  # doubles, capped at 8, back to 1 after the healthy one
    expected = [expected_rng.uniform(0, c) for c in ceilings]
    assert gaps == pytest.approx(expected)
    assert all(0 <= g <= c for g, c in zip(gaps, ceilings, strict=True))


async def test_reconnect_now_and_429(clock: trio.testing.MockClock) -> None:
    starts: list[float] = []
    plan = iter(
        [
            SessionOutcome(reason="info-20051", reconnect_now=True),
            SessionOutcome(reason="error: handshake rejected: HTTP 429", handshake_status=429),
            SessionOutcome(reason="auth-failed", final=True),
        ]
    )

    def make() -> FakeSession:
        starts.append(trio.current_time())
        return FakeSession(next(plan), 0)

    await supervise("a", make, backoff=Backoff(cap=1.0), rate_limit=ConnectionRateLimit(5, 15.0))  # type: ignore[arg-type]
    assert starts[1] - starts[0] == 0  # 20051: reconnect at once
    assert starts[2] - starts[1] >= 15.0  # 429: wait at least the rate-limit window


async def test_connection_rate_limit(clock: trio.testing.MockClock) -> None:
    limit = ConnectionRateLimit(5, 15.0)
    times = []
    start = trio.current_time()
    for _ in range(11):
        await limit.acquire()
        times.append(trio.current_time() - start)
    assert times == [0.0] * 5 + [15.0] * 5 + [30.0]


class BufferingSocket(FakeSocket):
    """A socket whose reader has already read every queued frame: ``take_buffered`` hands
    them out without waiting; ``get_message`` is counted (each is a scheduler pass)."""

    def __init__(self, frames: list[str]) -> None:
        super().__init__([])
        self.queued = list(frames)
        self.waits = 0

    async def get_message(self) -> str:
        self.waits += 1
        await trio.lowlevel.checkpoint()
        if not self.queued:
            raise ConnectionLost(1000, "done")
        return self.queued.pop(0)

    def take_buffered(self) -> str | None:
        return self.queued.pop(0) if self.queued else None


async def test_the_receive_loop_takes_a_burst_in_bounded_runs() -> None:
    """Frames the socket has already read are handled in runs of at most DRAIN + 1 per
    wait (no scheduler pass per frame), every one once and in order."""
    from recorder.upstream.session import DRAIN

    burst = [f'[0,"n",[{n},"x"]]' for n in range(1, 1001)]
    sink, items = trio.open_memory_channel[object](2000)
    sock = BufferingSocket([INFO, AUTH_OK, *burst])
    outcome = await make_session(sock, sink).run()
    assert outcome.reason == "closed"
    frames = []
    while True:
        try:
            item = items.receive_nowait()
        except trio.WouldBlock:
            break
        if isinstance(item, NewEvent) and not item.kind.startswith("recorder."):
            frames.append(item.frame)
    assert frames == [INFO, AUTH_OK, *burst]
    # INFO and the auth answer are waited for apart (the first frame; auth asks for action),
    # then the burst: one wait per run of DRAIN + 1, and the wait that finds the end.
    runs = -(-len(burst) // (DRAIN + 1))
    assert sock.waits == 2 + runs + 1, sock.waits


async def test_a_socket_hands_out_what_it_has_read_without_waiting() -> None:
    """``Socket.take_buffered`` on a real trio-websocket connection: the messages its
    reader task has queued, in order; then None; after the close, None, and
    ``get_message`` raises the close."""
    from trio_websocket import serve_websocket

    from recorder.upstream.connection import Socket, connect

    sent = [f"message {n}" for n in range(300)]

    async def handler(request: object) -> None:
        ws = await request.accept()  # type: ignore[attr-defined]
        for text in sent:
            await ws.send_message(text)
        await ws.get_message()  # until the client says it has taken them
        await ws.aclose(4000, "bye")

    async with trio.open_nursery() as nursery:
        server = await nursery.start(serve_websocket, handler, "127.0.0.1", 0, None)
        port = server.port
        async with connect(f"ws://127.0.0.1:{port}/ws/2") as sock:
            assert isinstance(sock, Socket)
            got = [await sock.get_message()]
            await trio.testing.wait_all_tasks_blocked()  # the reader has read them all
            while (more := sock.take_buffered()) is not None:
                got.append(more)
            assert got == sent
            assert sock.take_buffered() is None
            await sock.send_message("taken")
            with pytest.raises(ConnectionLost) as lost:
                await sock.get_message()
            assert lost.value.code == 4000
            assert sock.take_buffered() is None
        nursery.cancel_scope.cancel()
