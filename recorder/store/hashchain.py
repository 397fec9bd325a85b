"""The hash chain over ``events``: each row's hash covers its content and the previous row's
hash of the same account, so any edit, insertion or removal breaks every later link.

``id`` is not covered (the database assigns it at insert); the chain is walked in id order.
"""

from __future__ import annotations

import hashlib
from datetime import datetime

GENESIS = "0" * 64
# Fields are joined with the ASCII unit separator (0x1f), which JSON text cannot contain raw.


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
    return chain_hash_iso(
        prev,
        account,
        session_id,
        received_at.isoformat(timespec="microseconds"),
        chan_id,
        kind,
        seq,
        auth_seq,
        frame,
    )


def chain_hash_iso(
    prev: str,
    account: str,
    session_id: int | None,
    received_iso: str,
    chan_id: int | None,
    kind: str,
    seq: int | None,
    auth_seq: int | None,
    frame: str,
) -> str:
    """:func:`chain_hash` with ``received_at`` already as ISO 8601 text (the writer's hot
    path formats it once for both the hash and the SQLite column)."""
    text = (
        f"{prev}\x1f{account}\x1f{'' if session_id is None else session_id}\x1f"
        f"{received_iso}\x1f{'' if chan_id is None else chan_id}\x1f{kind}\x1f"
        f"{'' if seq is None else seq}\x1f{'' if auth_seq is None else auth_seq}\x1f{frame}"
    )
    return hashlib.sha256(text.encode()).hexdigest()
