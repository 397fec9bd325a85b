"""Texts the client sends (auth, conf, ping) and the auth signature.

``authPayload = "AUTH" + str(nonce)`` and ``authSig = hex(HMAC-SHA384(secret, authPayload))``
exactly as protocol.md §2.1 and the official clients document. The secret is an argument, not
state: nothing here keeps it.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

import orjson

SEQ_ALL = 65536
DMS_CANCEL_ON_DISCONNECT = 4


def auth_payload(nonce: int) -> str:
    return f"AUTH{nonce}"


def sign(api_secret: str, payload: str) -> str:
    return hmac.new(api_secret.encode(), payload.encode(), hashlib.sha384).hexdigest()


def signature_matches(api_secret: str, payload: str, signature: str) -> bool:
    return hmac.compare_digest(sign(api_secret, payload), signature)


def auth_message(
    api_key: str,
    api_secret: str,
    nonce: int,
    *,
    filter: Sequence[str] = (),
    dms: bool = False,
) -> str:
    payload = auth_payload(nonce)
    msg: dict[str, object] = {
        "event": "auth",
        "apiKey": api_key,
        "authNonce": nonce,
        "authPayload": payload,
        "authSig": sign(api_secret, payload),
    }
    if filter:
        msg["filter"] = list(filter)
    if dms:
        msg["dms"] = DMS_CANCEL_ON_DISCONNECT
    return orjson.dumps(msg).decode()


def conf_message(flags: int = SEQ_ALL) -> str:
    return orjson.dumps({"event": "conf", "flags": flags}).decode()


def ping_message(cid: int) -> str:
    return orjson.dumps({"event": "ping", "cid": cid}).decode()
