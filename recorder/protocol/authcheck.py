"""The exchange's side of ``auth``, sans-io: used by the simulator and the replay server.

Checks an auth request as Bitfinex does (protocol.md §2.4): unknown key, a payload that is
not ``AUTH...``, a signature that does not match, a nonce that is not above the key's last
one (or above 2**53 - 1) are each refused with the real code and message.
"""

from __future__ import annotations

from typing import Any

from recorder.protocol.messages import signature_matches
from recorder.protocol.nonce import MAX_NONCE


class AuthChecker:
    def __init__(self, api_keys: dict[str, str]) -> None:
        self.api_keys = dict(api_keys)
        self.last_nonce: dict[str, int] = {}

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
        if nonce > MAX_NONCE:
            return 10114, "nonce: too big"
        if nonce <= self.last_nonce.get(key, 0):
            return 10114, "nonce: small"
        self.last_nonce[key] = nonce
        return None
