"""One upstream session: connect, ``info``, ``conf`` (SEQ_ALL), ``auth``, then read until the
connection ends, forwarding every frame (and local markers) to the writer in read order.

The session only moves bytes and time; what a frame means comes from :mod:`recorder.protocol`.
It ends for one reason, recorded in the ``sessions`` row and in a ``recorder.disconnected``
marker: ``closed`` (the exchange closed), ``heartbeat-timeout`` (no frame for twice the
heartbeat period and no pong after a ping), ``info-20051`` / ``info-20061`` (reconnect now),
``seq-gap`` (a public sequence gap: reconnect for fresh snapshots), ``auth-failed``,
``database-unavailable`` (the writer could not take frames for longer than the bound),
``shutdown`` (cancelled), or ``error: ...``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
import trio

from recorder.config import Secret
from recorder.logs import log_fields
from recorder.protocol import (
    MALFORMED,
    SEQ_ALL,
    Frame,
    SeqProblem,
    SequenceChecker,
    auth_message,
    classify,
    conf_message,
    ping_message,
)
from recorder.store.eventlog import NewEvent, SessionChange
from recorder.upstream.connection import ConnectionLost, Connector, HandshakeFailed, connect
from recorder.writer import Item

log = logging.getLogger(__name__)

# Auth failures that retrying cannot fix: a wrong key or secret, a malformed request.
FINAL_AUTH_CODES = frozenset({10100, 10111, 10112, 10113})
SHUTDOWN_GRACE = 5.0


@dataclass(frozen=True)
class SessionParams:
    account: str
    url: str
    api_key: Secret
    api_secret: Secret
    filter: tuple[str, ...] = ()
    dms: bool = False
    heartbeat_period: float = 15.0
    pong_timeout: float = 10.0
    info_timeout: float = 15.0
    db_unavailable_timeout: float = 30.0


@dataclass
class SessionOutcome:
    session_id: int | None = None
    reason: str = "shutdown"
    authenticated: bool = False
    final: bool = False
    reconnect_now: bool = False
    auth_code: int | None = None
    auth_msg: str | None = None
    handshake_status: int | None = None
    frames: int = 0
    started: float = field(default_factory=trio.current_time)
    ended: float | None = None


class _End(Exception):
    """Internal: the session decided to end, for ``reason``."""

    def __init__(self, reason: str, *, final: bool = False, reconnect_now: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.final = final
        self.reconnect_now = reconnect_now


class _WriterStalled(Exception):
    def __init__(self, item: Item) -> None:
        super().__init__("writer stalled")
        self.item = item


def utcnow() -> datetime:
    return datetime.now(UTC)


def _marker(what: str, **fields: Any) -> str:
    return orjson.dumps({"event": f"recorder.{what}", **fields}).decode()


class Session:
    def __init__(
        self,
        params: SessionParams,
        *,
        sink: trio.MemorySendChannel[Item],
        open_session: Callable[[str, str, datetime], Awaitable[int]],
        next_nonce: Callable[[], Awaitable[int]],
        connector: Connector = connect,
        now: Callable[[], datetime] = utcnow,
    ) -> None:
        self.p = params
        self.sink = sink
        self.open_session = open_session
        self.next_nonce = next_nonce
        self.connector = connector
        self.now = now
        self.outcome = SessionOutcome()
        self.seq = SequenceChecker()
        self._connected = False

    # --- output -----------------------------------------------------------------------------

    async def _emit(self, item: Item) -> None:
        """Hand ``item`` to the writer. The slow path (the queue is full: backpressure) is
        shielded, so no deadline around the receive loop (the heartbeat watchdog) can cancel
        a hand-over half-way and lose the frame; it is bounded by the database timeout."""
        try:
            self.sink.send_nowait(item)
            return
        except trio.WouldBlock:
            pass
        with trio.CancelScope(shield=True):
            with trio.move_on_after(self.p.db_unavailable_timeout):
                await self.sink.send(item)
                return
        raise _WriterStalled(item)

    def _event(self, frame: Frame, received_at: datetime) -> NewEvent:
        self.outcome.frames += 1
        return NewEvent(
            self.p.account,
            self.outcome.session_id,
            received_at,
            frame.chan_id,
            frame.kind,
            frame.seq,
            frame.auth_seq,
            frame.text,
        )

    async def _record(self, frame: Frame, received_at: datetime) -> None:
        await self._emit(self._event(frame, received_at))

    async def _mark(self, what: str, **fields: Any) -> None:
        await self._emit(
            NewEvent(
                self.p.account,
                self.outcome.session_id,
                self.now(),
                None,
                f"recorder.{what}",
                None,
                None,
                _marker(what, **fields),
            )
        )

    async def _change(self, **values: Any) -> None:
        assert self.outcome.session_id is not None
        await self._emit(SessionChange(self.outcome.session_id, values))

    # --- lifecycle --------------------------------------------------------------------------

    async def run(self) -> SessionOutcome:
        out = self.outcome
        out.session_id = await self.open_session(self.p.account, self.p.url, self.now())
        log_fields(
            log, "session start", account=self.p.account, session=out.session_id, url=self.p.url
        )
        close_code: int | None = None
        pending: Item | None = None
        try:
            async with self.connector(self.p.url) as ws:
                self._connected = True
                try:
                    await self._change(connected_at=self.now())
                    await self._mark("connected", url=self.p.url)
                    await self._converse(ws)
                except _End as end:
                    out.reason, out.final, out.reconnect_now = (
                        end.reason,
                        end.final,
                        end.reconnect_now,
                    )
                    await ws.aclose(1000, end.reason)
                except _WriterStalled as stalled:
                    out.reason, pending = "database-unavailable", stalled.item
                    await ws.aclose(1001, "recorder database unavailable")
        except ConnectionLost as exc:
            out.reason, close_code = "closed", exc.code
        except HandshakeFailed as exc:
            out.reason, out.handshake_status = f"error: {exc}", exc.status
        except trio.TooSlowError:
            out.reason = "error: no info event after connecting"
        finally:
            # Also on cancellation, where the reason stays 'shutdown'.
            await self._finish(close_code, pending)
        return out

    async def _finish(self, close_code: int | None, pending: Item | None) -> None:
        """Record the end, shielded from cancellation: the marker, then the session row."""
        out = self.outcome
        out.ended = trio.current_time()
        with trio.CancelScope(shield=True):
            if pending is not None:
                # Never drop a frame: wait for the database however long it takes.
                await self.sink.send(pending)
            with trio.move_on_after(SHUTDOWN_GRACE):
                if self._connected:
                    await self.sink.send(
                        NewEvent(
                            self.p.account,
                            out.session_id,
                            self.now(),
                            None,
                            "recorder.disconnected",
                            None,
                            None,
                            _marker("disconnected", reason=out.reason, code=close_code),
                        )
                    )
                assert out.session_id is not None
                await self.sink.send(
                    SessionChange(
                        out.session_id, {"ended_at": self.now(), "end_reason": out.reason}
                    )
                )
        level = logging.WARNING if out.final else logging.INFO
        log_fields(
            log,
            "session end",
            level,
            account=self.p.account,
            session=out.session_id,
            reason=out.reason,
            frames=out.frames,
            close_code=close_code,
        )

    async def _converse(self, ws: Any) -> None:
        p = self.p
        with trio.fail_after(p.info_timeout):
            text = await ws.get_message()
        received_at = self.now()
        first = classify(text)
        await self._record(first, received_at)
        if first.kind != "info" or not isinstance(first.payload, dict):
            raise _End("error: first frame is not an info event")
        if first.payload.get("version") != 2:
            raise _End(f"error: unsupported API version {first.payload.get('version')!r}")
        await ws.send_message(conf_message(SEQ_ALL))
        nonce = await self.next_nonce()  # persisted before the auth frame leaves
        await ws.send_message(
            auth_message(
                p.api_key.reveal(), p.api_secret.reveal(), nonce, filter=p.filter, dms=p.dms
            )
        )
        await self._receive_loop(ws)

    async def _receive_loop(self, ws: Any) -> None:
        """Read until the session ends. The watchdog is one deadline that every frame pushes
        back: after ``2 x heartbeat`` of silence, ping; ``pong_timeout`` later, give up.
        (One long-lived scope, not one per frame: this loop runs for every frame read.)"""
        quiet_limit = 2 * self.p.heartbeat_period
        ping_cid = 0
        while True:
            with trio.CancelScope(deadline=trio.current_time() + quiet_limit) as watchdog:
                # The hot path: no coroutine calls unless a frame needs more than the hand-over.
                sink, seq = self.sink, self.seq
                while True:
                    text = await ws.get_message()
                    received_at = self.now()
                    frame = classify(text)
                    item = self._event(frame, received_at)
                    try:
                        sink.send_nowait(item)
                    except trio.WouldBlock:
                        await self._emit(item)
                    if frame.chan_id == 0:
                        problems = seq.check(frame.kind, frame.seq, frame.auth_seq)
                        if problems:
                            await self._sequence_problems(problems)
                    else:
                        await self._interpret(frame)
                    watchdog.deadline = trio.current_time() + quiet_limit
            # Silence: ask whether the connection is still there.
            ping_cid += 1
            await ws.send_message(ping_message(ping_cid))
            with trio.move_on_after(self.p.pong_timeout) as wait:
                text = await ws.get_message()
            if wait.cancelled_caught:
                raise _End("heartbeat-timeout")
            frame = classify(text)  # the pong, or any frame: the connection is alive
            await self._record(frame, self.now())
            await self._interpret(frame)

    async def _interpret(self, frame: Frame) -> None:
        kind = frame.kind
        if frame.chan_id == 0:
            await self._sequence_problems(self.seq.check(kind, frame.seq, frame.auth_seq))
            return
        if kind == MALFORMED:
            log_fields(
                log,
                "malformed frame kept",
                logging.WARNING,
                account=self.p.account,
                reason=frame.reason,
            )
            return
        payload = frame.payload if isinstance(frame.payload, dict) else {}
        if kind == "auth":
            await self._on_auth(payload)
        elif kind == "info":
            code = payload.get("code")
            if "version" in payload and payload["version"] != 2:
                raise _End(f"error: unsupported API version {payload['version']!r}")
            if code == 20051:
                raise _End("info-20051", reconnect_now=True)
            if code == 20060:
                log_fields(
                    log,
                    "exchange maintenance started (20060)",
                    logging.WARNING,
                    account=self.p.account,
                )
            elif code == 20061:
                # Maintenance over: reconnect and re-authenticate for fresh snapshots.
                raise _End("info-20061", reconnect_now=True)

    async def _sequence_problems(self, problems: list[SeqProblem]) -> None:
        """Mark each problem in the log; a public sequence gap ends the session (fresh
        snapshots after the reconnect repair what was missed)."""
        for pr in problems:
            await self._mark(
                "seq-gap", counter=pr.counter, problem=pr.problem, expected=pr.expected, got=pr.got
            )
        if any(pr.problem == "gap" and pr.counter == "seq" for pr in problems):
            raise _End("seq-gap", reconnect_now=True)

    async def _on_auth(self, payload: dict[str, Any]) -> None:
        out = self.outcome
        status = payload.get("status")
        code = payload.get("code")
        if status == "OK":
            out.authenticated = True
            user_id = payload.get("userId")
            await self._change(
                authenticated_at=self.now(),
                auth_status="OK",
                user_id=user_id if isinstance(user_id, int) else None,
            )
            log_fields(
                log,
                "authenticated",
                account=self.p.account,
                session=out.session_id,
                user_id=user_id,
            )
            return
        out.auth_code = code if isinstance(code, int) else None
        out.auth_msg = str(payload.get("msg", ""))
        await self._change(
            auth_status=str(status) if status is not None else None, auth_code=out.auth_code
        )
        raise _End("auth-failed", final=out.auth_code in FINAL_AUTH_CODES)
