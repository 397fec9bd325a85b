"""Frame classification: text in, :class:`Frame` out, never an exception.

Remote garbage is data: unparseable text, a JSON value that is neither a list nor an object,
or a list of the wrong shape becomes kind ``malformed`` with the reason, and the caller still
stores the raw text. Sequence numbers are peeled off the end of chanId 0 arrays as
protocol.md §5.2/§5.3 describe: ``[0, TYPE, PAYLOAD, PUB_SEQ, AUTH_SEQ]``, ``[0, "hb", PUB_SEQ]``,
and a single trailing number on a data frame is the auth sequence alone.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import orjson

MALFORMED = "malformed"
HEARTBEAT = "hb"


class Frame(NamedTuple):
    """One classified frame (a NamedTuple: one is built per frame read, on the hot path)."""

    text: str
    kind: str
    chan_id: int | None = None
    seq: int | None = None
    auth_seq: int | None = None
    payload: Any = None
    reason: str | None = None  # why it is malformed


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _malformed(text: str, reason: str) -> Frame:
    return Frame(text=text, kind=MALFORMED, reason=reason)


def classify(text: str | bytes) -> Frame:
    try:
        if isinstance(text, bytes):
            text = text.decode("utf-8", errors="replace")
        return _classify(text)
    except Exception as exc:  # the contract: classification never raises
        return _malformed(str(text), f"unclassifiable: {type(exc).__name__}")


def _classify(text: str) -> Frame:
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        return _malformed(text, f"invalid JSON: {exc}")
    if isinstance(data, dict):
        event = data.get("event")
        if not isinstance(event, str) or not event:
            return _malformed(text, "object without an 'event' name")
        return Frame(text=text, kind=event, payload=data)
    if not isinstance(data, list):
        return _malformed(text, f"expected a list or an object, got {type(data).__name__}")
    if len(data) < 2:
        return _malformed(text, "array shorter than [CHAN_ID, ...]")
    chan_id = data[0]
    if not _int(chan_id):
        return _malformed(text, "channel id is not an integer")
    if chan_id != 0:
        # Public channel frame (not subscribed by the recorder, stored if it comes anyway).
        pub = data[-1] if len(data) > 2 and _int(data[-1]) else None
        return Frame(text=text, kind="channel", chan_id=chan_id, seq=pub, payload=data[1])
    kind = data[1]
    if not isinstance(kind, str) or not kind:
        return _malformed(text, "chanId 0 frame without a message type")
    if kind == HEARTBEAT:
        trailing = data[2:]
        if len(trailing) > 1 or (trailing and not _int(trailing[0])):
            return _malformed(text, "heartbeat with unexpected trailing elements")
        return Frame(text=text, kind=kind, chan_id=0, seq=trailing[0] if trailing else None)
    if len(data) < 3:
        return _malformed(text, f"'{kind}' frame without a payload")
    trailing = data[3:]
    if not all(_int(v) for v in trailing):
        return _malformed(text, f"'{kind}' frame with non-integer trailing elements")
    seq: int | None = None
    auth_seq: int | None = None
    if len(trailing) == 1:
        auth_seq = trailing[0]
    elif len(trailing) >= 2:
        # [.., PUB_SEQ, AUTH_SEQ] or, with TIMESTAMP also on, [.., PUB_SEQ, AUTH_SEQ, MTS]
        seq, auth_seq = trailing[0], trailing[1]
    return Frame(text=text, kind=kind, chan_id=0, seq=seq, auth_seq=auth_seq, payload=data[2])
