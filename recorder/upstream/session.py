"""One upstream session: connect, ``info``, ``conf`` (SEQ_ALL), ``auth``, then read until the
connection ends, forwarding every frame (and local markers) to the writer in read order.

The session only moves bytes and time: receive -> stamp -> classify -> hand over -> act on
what :class:`recorder.protocol.client.ClientState` says. Every protocol rule (info codes,
versions, sequence numbers, final auth codes, what silence means) lives there.
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

import trio

from recorder.config import Secret
from recorder.logs import log_fields
from recorder.protocol import Frame, auth_message, classify
from recorder.protocol.client import (
    FORWARD,
    FORWARD_ONLY,
    Action,
    Authenticated,
    AuthFailed,
    ClientState,
    End,
    KeyCanWrite,
    Mark,
    Notice,
    Send,
    SendAuth,
    SnapshotsIn,
)
from recorder.protocol.rest import WRITE_KEY_ALLOWED, write_key_refused
from recorder.store.eventlog import NewEvent, SessionChange, marker
from recorder.upstream.connection import (
    MAX_FRAME_BYTES,
    UNDELIVERABLE,
    ConnectionLost,
    Connector,
    HandshakeFailed,
    connect,
)
from recorder.writer import Item

log = logging.getLogger(__name__)

SHUTDOWN_GRACE = 5.0
# Messages the receive loop takes from what the socket has already read, after the one it
# waited for, before it checkpoints again: a burst is handled in runs (no scheduler pass
# per frame), and another task waits at most about this many frames' handling (a few ms).
DRAIN = 64


def _nothing_buffered() -> None:
    """``take_buffered`` of a socket that cannot look at its queue (tests' fakes)."""
    return None


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
    allow_write_key: bool = False
    max_frame_bytes: int = MAX_FRAME_BYTES


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
    last_frame_at: datetime | None = None  # when the last frame was read
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
        on_connected: Callable[[], None] | None = None,
        on_authenticated: Callable[[int, datetime, trio.Event], None] | None = None,
        on_end: Callable[[SessionOutcome], None] | None = None,
        on_fill: Callable[[], None] | None = None,
        key_lock: trio.Lock | None = None,
    ) -> None:
        self.p = params
        self.sink = sink
        self.open_session = open_session
        self.next_nonce = next_nonce
        self.connector = connector
        self.now = now
        self.on_connected = on_connected
        self.on_authenticated = on_authenticated
        self.on_end = on_end  # called once the end is recorded, also on cancellation
        self.on_fill = on_fill  # called for each fill (tu) received
        # Held around taking a nonce and sending it: REST requests of the same key take it
        # too, so the exchange never sees a smaller nonce after a larger one.
        self.key_lock = key_lock or trio.Lock()
        self.outcome = SessionOutcome()
        self.client = ClientState(allow_write_key=params.allow_write_key)
        # Set once the snapshots that follow a successful auth have all been handed over
        # (the backfill asks REST for the current state only after them).
        self.snapshots_in = trio.Event()
        self._connected = False
        # An end asked for from outside (a REST permission check found a key that can
        # write): the session is cancelled and records this reason instead of 'shutdown'.
        self._ended_by: _End | None = None
        self._undelivered: dict[str, Any] | None = None

    def end(self, reason: str, *, final: bool = False) -> None:
        """Ask the session to end for ``reason``; the caller then cancels the scope the
        session runs in (the end is recorded, shielded, as for a shutdown)."""
        self._ended_by = _End(reason, final=final)

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
        self.outcome.last_frame_at = received_at
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

    def _marker(self, what: str, fields: dict[str, Any]) -> NewEvent:
        return marker(
            self.p.account, self.outcome.session_id, self.now(), f"recorder.{what}", fields
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
                if self.on_connected is not None:
                    self.on_connected()
                try:
                    await self._change(connected_at=self.now())
                    await self._emit(self._marker("connected", {"url": self.p.url}))
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
            if exc.code in UNDELIVERABLE:
                # A frame the library could not deliver (no text to store): a marker says
                # what, how big it may be, and the close code, before the disconnect.
                self._undelivered = {
                    "code": exc.code,
                    "problem": UNDELIVERABLE[exc.code],
                    "detail": exc.reason,
                    "max_frame_bytes": self.p.max_frame_bytes,
                }
        except HandshakeFailed as exc:
            out.reason, out.handshake_status = f"error: {exc}", exc.status
        except trio.TooSlowError:
            out.reason = "error: no info event after connecting"
        finally:
            # Also on cancellation, where the reason stays 'shutdown' unless end() said why.
            if self._ended_by is not None:
                out.reason, out.final = self._ended_by.reason, self._ended_by.final
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
                if self._undelivered is not None:
                    await self.sink.send(self._marker("undelivered-frame", self._undelivered))
                    log_fields(
                        log,
                        "a frame could not be read and is marked in the log",
                        logging.WARNING,
                        account=self.p.account,
                        **self._undelivered,
                    )
                if self._connected:
                    fields = {"reason": out.reason, "code": close_code}
                    await self.sink.send(self._marker("disconnected", fields))
                assert out.session_id is not None
                await self.sink.send(
                    SessionChange(
                        out.session_id, {"ended_at": self.now(), "end_reason": out.reason}
                    )
                )
        if self.on_end is not None:
            self.on_end(out)
        level = (
            logging.WARNING
            if out.final or out.reason.startswith("error:") or out.reason == "auth-failed"
            else logging.INFO
        )
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
        """The first frame (within ``info_timeout``), then the receive loop.

        The watchdog is one deadline per quiet period, not one per frame: a frame only notes
        when it arrived (moving a trio deadline on every frame was a sixth of the loop's
        cost), and when the deadline passes the loop looks whether anything came since; only
        real silence goes to the client state (ping, then give up). The deadline can only
        interrupt ``get_message``, which loses nothing (trio-websocket's queue keeps the
        message): handing a frame over when the writer's queue is full, and carrying out
        actions, happen outside the watchdog's scope, so no frame read is ever dropped."""
        with trio.fail_after(self.p.info_timeout):
            first = await ws.get_message()
        await self._on_frame(ws, first, self.now())
        quiet_limit = 2 * self.p.heartbeat_period
        client = self.client
        sink = self.sink
        on_fill = self.on_fill

        def allowed() -> float:
            """How long the client state allows no frame: to a pong after a ping, else the
            quiet limit (a frame since a ping makes the quiet limit apply again)."""
            return self.p.pong_timeout if client.awaiting_pong else quiet_limit

        take_buffered = getattr(ws, "take_buffered", _nothing_buffered)
        last = trio.current_time()
        while True:
            blocked: NewEvent | None = None
            actions: tuple[Action, ...] = FORWARD_ONLY
            more = 0  # messages still to take without a wait
            with trio.CancelScope(deadline=last + allowed()):
                while True:
                    # The hot path, inlined: no await unless there is more to do than hand
                    # the frame over; after a wait, the messages already read behind it, up
                    # to DRAIN, without a checkpoint each (see ``Socket.take_buffered``).
                    text = take_buffered() if more else None
                    if text is None:
                        text = await ws.get_message()
                        more = DRAIN
                    else:
                        more -= 1
                    received_at = self.now()
                    last = trio.current_time()
                    frame = classify(text)
                    item = self._event(frame, received_at)
                    if on_fill is not None and frame.kind == "tu":
                        on_fill()
                    try:
                        sink.send_nowait(item)
                    except trio.WouldBlock:
                        blocked = item
                    actions = client.receive(frame)
                    if blocked is not None or actions is not FORWARD_ONLY:
                        break
            if blocked is not None:
                await self._emit(blocked)  # waits for the writer (back-pressure)
            if actions is not FORWARD_ONLY:
                await self._act(ws, actions)
            elif blocked is None and trio.current_time() - last >= allowed():
                # The deadline passed with nothing for as long as the client state allows.
                await self._act(ws, client.silence())
                last = trio.current_time()

    async def _on_frame(self, ws: Any, text: str | bytes, received_at: datetime) -> None:
        frame = classify(text)
        await self._act(ws, self.client.receive(frame), self._event(frame, received_at))

    async def _act(
        self, ws: Any, actions: tuple[Action, ...], forward: NewEvent | None = None
    ) -> None:
        """Carry out the client state's actions in order (``forward``: the frame to hand
        over, when it has not been already)."""
        for action in actions:
            if action is FORWARD:
                if forward is not None:
                    await self._emit(forward)
            elif isinstance(action, Send):
                await ws.send_message(action.text)
            elif isinstance(action, SendAuth):
                p = self.p
                async with self.key_lock:
                    nonce = await self.next_nonce()  # persisted before the auth frame leaves
                    await ws.send_message(
                        auth_message(
                            p.api_key.reveal(),
                            p.api_secret.reveal(),
                            nonce,
                            filter=p.filter,
                            dms=p.dms,
                        )
                    )
            elif isinstance(action, Mark):
                await self._emit(self._marker(action.what, action.fields))
            elif isinstance(action, Authenticated):
                await self._authenticated(action)
            elif isinstance(action, AuthFailed):
                self.outcome.auth_code = action.code
                self.outcome.auth_msg = action.msg
                await self._change(auth_status=action.status, auth_code=action.code)
            elif isinstance(action, KeyCanWrite):
                if action.refused:
                    text = write_key_refused(self.p.account, list(action.scopes))
                    log_fields(log, text, logging.ERROR, account=self.p.account)
                else:
                    scopes = ",".join(action.scopes)
                    log_fields(
                        log,
                        WRITE_KEY_ALLOWED,
                        logging.WARNING,
                        account=self.p.account,
                        scopes=scopes,
                    )
            elif isinstance(action, SnapshotsIn):
                self.snapshots_in.set()
            elif isinstance(action, Notice):
                log_fields(
                    log, action.message, logging.WARNING, account=self.p.account, **action.fields
                )
            elif isinstance(action, End):
                raise _End(action.reason, final=action.final, reconnect_now=action.reconnect_now)

    async def _authenticated(self, action: Authenticated) -> None:
        out = self.outcome
        out.authenticated = True
        at = self.now()
        await self._change(authenticated_at=at, auth_status="OK", user_id=action.user_id)
        if not action.proceed:
            return
        if self.on_authenticated is not None and out.session_id is not None:
            self.on_authenticated(out.session_id, at, self.snapshots_in)
        log_fields(
            log,
            "authenticated",
            account=self.p.account,
            session=out.session_id,
            user_id=action.user_id,
        )
