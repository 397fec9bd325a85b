"""The client side of an authenticated Bitfinex session, as a sans-io state machine.

As h11's ``Connection``: :class:`ClientState` takes what happened (a classified frame, the
heartbeat watchdog firing) and answers with frozen actions for the I/O layer to carry out in
order. It decides every protocol rule of the session: the first frame must be ``info`` with
API version 2; then ``conf`` and ``auth`` are sent; what info codes 20051/20060/20061 mean;
sequence numbers; which auth failures are final; what silence means (ping, then give up).
It does no I/O, knows no clock and holds no secret, so every rule is a plain synchronous
test (tests/test_client_state.py).

Every received frame is forwarded first (:data:`FORWARD`): the log keeps each frame in read
order whatever it leads to. The common case, an account frame with nothing to act on,
returns the shared :data:`FORWARD_ONLY` tuple (no allocation on the hot path).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from recorder.protocol.classify import MALFORMED, Frame
from recorder.protocol.messages import SEQ_ALL, conf_message, ping_message
from recorder.protocol.rest import write_caps, write_key_end
from recorder.protocol.sequence import SequenceChecker

API_VERSION = 2
# Auth failures that retrying cannot fix: a wrong key or secret, a malformed request.
FINAL_AUTH_CODES = frozenset({10100, 10111, 10112, 10113})
INFO_RESTART = 20051  # the server restarts: reconnect now
INFO_MAINTENANCE_START = 20060  # keep the connection, expect 20061
INFO_MAINTENANCE_END = 20061  # resume: reconnect for fresh snapshots


@dataclass(frozen=True, slots=True)
class Forward:
    """Hand the frame just received to the writer (always the first action for a frame)."""


@dataclass(frozen=True, slots=True)
class Send:
    """Send this text to the exchange."""

    text: str


@dataclass(frozen=True, slots=True)
class SendAuth:
    """Send the auth request: the I/O layer takes a persisted nonce and signs it."""


@dataclass(frozen=True, slots=True)
class Mark:
    """Record a local marker ``recorder.<what>`` with these fields."""

    what: str
    fields: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Authenticated:
    user_id: int | None
    caps: dict[str, Any] | None
    # False when the session is about to end (a key that can write): nothing is to start
    # for it (the backfill of the gap, ...).
    proceed: bool = True


@dataclass(frozen=True, slots=True)
class AuthFailed:
    status: str | None  # as received ('FAILED'; the docs say 'FAIL')
    code: int | None
    msg: str


@dataclass(frozen=True, slots=True)
class Notice:
    """Something an operator should see in the log (nothing to do about it here)."""

    message: str
    fields: dict[str, Any]


@dataclass(frozen=True, slots=True)
class KeyCanWrite:
    """The auth reply's caps grant write: refused (an :class:`End` follows) unless the
    account allows it. The I/O layer says so in the log (``write_key_refused``)."""

    scopes: tuple[str, ...]
    refused: bool


@dataclass(frozen=True, slots=True)
class SnapshotsIn:
    """Every snapshot that follows a successful auth has been received (the backfill asks
    REST for the current state only after them)."""


@dataclass(frozen=True, slots=True)
class End:
    """End the session for ``reason``; ``reconnect_now`` skips the back-off; ``final`` stops
    the account (retrying cannot help)."""

    reason: str
    reconnect_now: bool = False
    final: bool = False


Action = (
    Forward
    | Send
    | SendAuth
    | Mark
    | Authenticated
    | AuthFailed
    | Notice
    | KeyCanWrite
    | SnapshotsIn
    | End
)

FORWARD = Forward()
FORWARD_ONLY: tuple[Action, ...] = (FORWARD,)
# What the exchange sends after every successful auth (protocol.md §6).
SNAPSHOT_KINDS = frozenset({"os", "ps", "ws", "fos", "fcs", "fls"})
FORWARD_SNAPSHOTS_IN: tuple[Action, ...] = (FORWARD, SnapshotsIn())


class ClientState:
    """One session's protocol state: waiting for ``info``, then open (authenticated or not)."""

    def __init__(self, *, allow_write_key: bool = False) -> None:
        self.allow_write_key = allow_write_key
        self.greeted = False  # the info event arrived and was acceptable
        self.authenticated = False
        self.snapshots_pending: set[str] = set()  # after an auth, until all arrived
        self.awaiting_pong = False
        self.pings = 0
        self.sequence = SequenceChecker()

    # --- events -------------------------------------------------------------------------------

    def receive(self, frame: Frame) -> tuple[Action, ...]:
        """A frame was read; what to do, in order (always starting with :data:`FORWARD`)."""
        self.awaiting_pong = False  # any frame shows the connection is alive
        if not self.greeted:
            return (FORWARD, *self._greeting(frame))
        if frame.chan_id == 0:
            problems = self.sequence.check(frame.kind, frame.seq, frame.auth_seq)
            snapshots_in = False
            pending = self.snapshots_pending
            if pending and frame.kind in pending:
                pending.discard(frame.kind)
                snapshots_in = not pending
            if not problems:
                return FORWARD_SNAPSHOTS_IN if snapshots_in else FORWARD_ONLY
            actions: list[Action] = [FORWARD, SnapshotsIn()] if snapshots_in else [FORWARD]
            for pr in problems:
                fields = {
                    "counter": pr.counter,
                    "problem": pr.problem,
                    "expected": pr.expected,
                    "got": pr.got,
                }
                actions.append(Mark("seq-gap", fields))
            # A public gap: frames were lost; reconnect for fresh snapshots. (A repeat, or an
            # auth counter problem, is only marked.)
            if any(pr.problem == "gap" and pr.counter == "seq" for pr in problems):
                actions.append(End("seq-gap", reconnect_now=True))
            return tuple(actions)
        if frame.kind == MALFORMED:
            return (FORWARD, Notice("malformed frame kept", {"reason": frame.reason}))
        payload = frame.payload if isinstance(frame.payload, dict) else {}
        if frame.kind == "auth":
            return (FORWARD, *self._auth(payload))
        if frame.kind == "info":
            return (FORWARD, *self._info(payload))
        return FORWARD_ONLY

    def silence(self) -> tuple[Action, ...]:
        """The watchdog fired: no frame for the quiet limit (ping), or none since the ping
        (give up)."""
        if self.awaiting_pong:
            return (End("heartbeat-timeout"),)
        self.awaiting_pong = True
        self.pings += 1
        return (Send(ping_message(self.pings)),)

    # --- rules --------------------------------------------------------------------------------

    def _greeting(self, frame: Frame) -> tuple[Action, ...]:
        if frame.kind != "info" or not isinstance(frame.payload, dict):
            return (End("error: first frame is not an info event"),)
        # The greeting must say which API it speaks; later info events may omit it.
        refused = self._version(frame.payload.get("version"))
        if refused:
            return refused
        self.greeted = True
        return (Send(conf_message(SEQ_ALL)), SendAuth())

    @staticmethod
    def _version(version: Any) -> tuple[Action, ...]:
        if version != API_VERSION:
            return (End(f"error: unsupported API version {version!r}"),)
        return ()

    def _info(self, payload: dict[str, Any]) -> tuple[Action, ...]:
        if "version" in payload:
            refused = self._version(payload["version"])
            if refused:
                return refused
        code = payload.get("code")
        if code == INFO_RESTART:
            return (End("info-20051", reconnect_now=True),)
        if code == INFO_MAINTENANCE_START:
            return (Notice("exchange maintenance started (20060)", {}),)
        if code == INFO_MAINTENANCE_END:
            # Maintenance over: reconnect and re-authenticate for fresh snapshots.
            return (End("info-20061", reconnect_now=True),)
        return ()

    def _auth(self, payload: dict[str, Any]) -> tuple[Action, ...]:
        status, code = payload.get("status"), payload.get("code")
        if status == "OK":
            self.authenticated = True
            self.snapshots_pending = set(SNAPSHOT_KINDS)
            user_id = payload.get("userId")
            caps = payload.get("caps")
            user_id = user_id if isinstance(user_id, int) else None
            caps = caps if isinstance(caps, dict) else None
            writes = write_caps(caps)
            if not writes:
                return (Authenticated(user_id, caps),)
            if self.allow_write_key:
                return (Authenticated(user_id, caps), KeyCanWrite(tuple(writes), refused=False))
            # A recorder has no business holding a trading key: stop this account.
            return (
                Authenticated(user_id, caps, proceed=False),
                KeyCanWrite(tuple(writes), refused=True),
                End(write_key_end(writes), final=True),
            )
        code = code if isinstance(code, int) else None
        return (
            AuthFailed(
                str(status) if status is not None else None, code, str(payload.get("msg", ""))
            ),
            End("auth-failed", final=code in FINAL_AUTH_CODES),
        )
