"""The hash chain over ``events``: each row's hash covers its content and the previous row's
hash of the same account, so any edit, insertion or removal breaks every later link.

``id`` is not covered (the database assigns it at insert); the chain is walked in id order.
"""

from __future__ import annotations

import hashlib
from datetime import datetime

GENESIS = "0" * 64
_SEP = "\x1f"


def chain_hash(
    prev: str,
    account: str,
    session_id: int | None,
    received_at: datetime,
    chan_id: int | None,
    kind: str,
    seq: int | None,
    auth_seq: int | None,
    frame: str,
) -> str:
    head = _SEP.join(
        (
            prev,
            account,
            "" if session_id is None else str(session_id),
            received_at.isoformat(),
            "" if chan_id is None else str(chan_id),
            kind,
            "" if seq is None else str(seq),
            "" if auth_seq is None else str(auth_seq),
        )
    )
    return hashlib.sha256(f"{head}{_SEP}{frame}".encode()).hexdigest()
