"""The Bitfinex WebSocket v2 protocol, sans-io: no sockets, no trio, no database.

Text in (``classify``), text out (``messages``), plus the nonce source, the sequence checker
and the field layouts. Clock and nonce state are injected, so everything here is testable as
plain synchronous transcripts.
"""

from recorder.protocol.classify import HEARTBEAT, MALFORMED, Frame, classify
from recorder.protocol.messages import (
    SEQ_ALL,
    auth_message,
    auth_payload,
    conf_message,
    ping_message,
    sign,
    signature_matches,
)
from recorder.protocol.nonce import MAX_NONCE, NonceExhausted, NonceSource
from recorder.protocol.sequence import SeqProblem, SequenceChecker

__all__ = [
    "HEARTBEAT",
    "MALFORMED",
    "MAX_NONCE",
    "SEQ_ALL",
    "Frame",
    "NonceExhausted",
    "NonceSource",
    "SeqProblem",
    "SequenceChecker",
    "auth_message",
    "auth_payload",
    "classify",
    "conf_message",
    "ping_message",
    "sign",
    "signature_matches",
]
