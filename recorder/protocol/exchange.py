"""The exchange's side of the protocol, sans-io: written once, used by the simulator and the
replay server.

What a Bitfinex server says to a client before any account data: ``info`` on connect, the
answers to ``ping`` and ``conf``, the ``auth`` replies, and which connection attempts it turns
away (5 per 15 s per client). :class:`AuthChecker` checks an auth request as Bitfinex does
(protocol.md §2.4): unknown key, a payload that is not ``AUTH...``, a signature that does not
match, a nonce that is not above the key's last one (or above 2**53 - 1) are each refused with
the real code and message.
"""

from __future__ import annotations

import hmac
from collections import deque
from typing import Any

from recorder.protocol.messages import signature_matches
from recorder.protocol.nonce import MAX_NONCE
from recorder.protocol.rest import rest_signature


class AuthChecker:
    def __init__(self, api_keys: dict[str, str]) -> None:
        self.api_keys = dict(api_keys)
        self.last_nonce: dict[str, int] = {}
        self.accepted: dict[str, list[int]] = {}  # every nonce taken, per key, in order
        self.refused: list[tuple[int, str]] = []  # nonce refusals (code, text)

    def check(self, msg: dict[str, Any]) -> tuple[int, str] | None:
        """None when the request authenticates (its nonce is then used), else (code, msg)."""
        key = msg.get("apiKey")
        if not isinstance(key, str) or key not in self.api_keys:
            return 10100, "apikey: invalid"
        payload, sig = msg.get("authPayload"), msg.get("authSig")
        if not isinstance(payload, str) or not payload.startswith("AUTH"):
            return 10111, "payload: invalid"
        if not isinstance(sig, str) or not signature_matches(self.api_keys[key], payload, sig):
            return 10100, "apikey: digest invalid"
        raw = msg.get("authNonce")
        try:
            nonce = int(raw) if isinstance(raw, int | str) else int(str(raw))
        except ValueError:
            return 10114, "nonce: invalid"
        return self._use_nonce(key, nonce)

    def _use_nonce(self, key: str, nonce: int) -> tuple[int, str] | None:
        """One nonce sequence per key, shared by WebSocket auth and REST (rest.md §1.4)."""
        if nonce > MAX_NONCE:
            self.refused.append((10114, "nonce: too big"))
            return 10114, "nonce: too big"
        if nonce <= self.last_nonce.get(key, 0):
            self.refused.append((10114, "nonce: small"))
            return 10114, "nonce: small"
        self.last_nonce[key] = nonce
        self.accepted.setdefault(key, []).append(nonce)
        return None

    def check_rest(self, headers: dict[str, str], path: str, body: bytes) -> tuple[int, str] | None:
        """A signed REST request (``bfx-apikey``, ``bfx-nonce``, ``bfx-signature`` over
        ``/api/v2/<path><nonce><body>``), checked as the exchange does."""
        key = headers.get("bfx-apikey", "")
        if key not in self.api_keys:
            return 10100, "apikey: invalid"
        raw = headers.get("bfx-nonce", "")
        if not raw.isdigit():
            return 10114, "nonce: invalid"
        expected = rest_signature(self.api_keys[key], path, int(raw), body)
        if not hmac.compare_digest(expected, headers.get("bfx-signature", "")):
            return 10100, "apikey: digest invalid"
        return self._use_nonce(key, int(raw))


# --- replies ---------------------------------------------------------------------------------


def info_event(server_id: str) -> dict[str, Any]:
    """The greeting every connection gets first."""
    return {"event": "info", "version": 2, "serverId": server_id, "platform": {"status": 1}}


def pong(request: dict[str, Any], ts_ms: int) -> dict[str, Any]:
    reply: dict[str, Any] = {"event": "pong", "ts": ts_ms}
    if "cid" in request:
        reply["cid"] = request["cid"]
    return reply


def conf_reply(request: dict[str, Any]) -> tuple[dict[str, Any], int | None]:
    """The answer to ``conf`` and the flags it sets (None: refused)."""
    flags = request.get("flags")
    if isinstance(flags, int) and not isinstance(flags, bool):
        return {"event": "conf", "status": "OK", "flags": flags}, flags
    return error_event(10050, "conf: invalid"), None


def error_event(code: int, msg: str) -> dict[str, Any]:
    return {"event": "error", "msg": msg, "code": code}


UNKNOWN_EVENT = error_event(10000, "Unknown event")


def auth_ok(user_id: int, auth_id: str, caps: dict[str, Any]) -> dict[str, Any]:
    return {
        "event": "auth",
        "status": "OK",
        "chanId": 0,
        "userId": user_id,
        "auth_id": auth_id,
        "caps": caps,
    }


def auth_failed(code: int, msg: str) -> dict[str, Any]:
    """The exchange spells the failure status ``FAILED`` (the docs say ``FAIL``)."""
    return {"event": "auth", "status": "FAILED", "chanId": 0, "code": code, "msg": msg}


ALREADY_AUTHENTICATED = auth_failed(10100, "already authenticated")


# --- the connection limit ----------------------------------------------------------------------


class ConnectionWindow:
    """At most ``count`` connection attempts in any ``window`` seconds: the exchange answers
    the rest with HTTP 429 (the simulator), and a client waits rather than dial them (the
    recorder's limiter). Time is passed in (sans-io)."""

    def __init__(self, count: int = 5, window: float = 15.0) -> None:
        self.count = count
        self.window = window
        self._attempts: deque[float] = deque()

    def admit(self, now: float) -> bool:
        """Count an attempt at ``now``; False when it is over the limit (then not counted)."""
        while self._attempts and self._attempts[0] <= now - self.window:
            self._attempts.popleft()
        if len(self._attempts) >= self.count:
            return False
        self._attempts.append(now)
        return True

    def next_admission(self) -> float:
        """When the oldest counted attempt leaves the window (call after a refusal)."""
        return self._attempts[0] + self.window
