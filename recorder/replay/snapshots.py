"""What the exchange sends right after an auth, built from the record as of a moment: the
synthetic snapshots a replay starting mid-session sends first.

``ps``, ``ws``, ``os`` come from the account's state as of T (:func:`state_at`, the fold of
``bfx-recorder state --at``); ``fos``, ``fcs``, ``fls`` from the funding folds over the
session's frames up to T (a session begins with the exchange's complete snapshots); ``bu``
and ``miu`` are the session's last such frames before T (re-serialised from the parsed frame:
the same values). Arrays have the exchange's
layouts; amounts are written with every digit the record holds (``orjson.Fragment``, never a
float), times as milliseconds.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

import orjson
import sqlalchemy as sa

from recorder.projections.base import Output
from recorder.projections.collection import COLLECTION_FOLDS, CollectionFold
from recorder.projections.reading import read_events
from recorder.projections.state import state_at
from recorder.protocol import layouts as L
from recorder.store.eventlog import EventLog
from recorder.store.schema import events

FUNDING = (("funding_offers", "fos"), ("funding_credits", "fcs"), ("funding_loans", "fls"))
STATE = (("positions", "ps", L.POSITION), ("wallets", "ws", L.WALLET), ("orders", "os", L.ORDER))
VERBATIM = ("bu", "miu")


def _value(value: Any) -> Any:
    if isinstance(value, Decimal):
        return orjson.Fragment(format(value, "f").encode())
    if isinstance(value, datetime):
        return int(value.timestamp() * 1000)
    raise TypeError(f"not JSON: {type(value).__name__}")


def dumps(value: Any) -> str:
    return orjson.dumps(value, default=_value).decode()


def snapshot_frames(engine: sa.Engine, account: str, session_id: int, at: datetime) -> list[str]:
    """The frames the exchange would send after an auth at ``at`` (in its order)."""
    state = state_at(engine, account, at)
    up_to = int(state["event_id"])
    frames = [
        dumps([0, abbr, [layout.array(row) for row in state[name]]]) for name, abbr, layout in STATE
    ]
    log = EventLog(engine)
    with engine.connect() as conn:
        first = conn.execute(
            sa.select(sa.func.min(events.c.id)).where(events.c.session_id == session_id)
        ).scalar_one()
        folds: dict[str, CollectionFold] = {name: COLLECTION_FOLDS[name]() for name, _ in FUNDING}
        kinds = {k for f in folds.values() for k in f.kinds} | set(VERBATIM)
        latest: dict[str, str] = {}
        after = int(first or 1) - 1
        scratch = Output()
        while first is not None and after < up_to:
            batch, covered = read_events(conn, log, account, kinds, after, 5000, up_to)
            for ev in batch:
                if ev.kind in VERBATIM:
                    latest[ev.kind] = orjson.dumps(ev.payload, default=_value).decode()
                    continue
                for fold in folds.values():
                    if ev.kind in fold.kinds:
                        fold.apply(ev, scratch)
            scratch.clear()
            if covered == after:
                break
            after = covered
    for name, abbr in FUNDING:
        fold = folds[name]
        frames.append(dumps([0, abbr, [fold.layout.array(r) for r in fold.open.values()]]))
    frames += [latest[k] for k in VERBATIM if k in latest]
    return frames
