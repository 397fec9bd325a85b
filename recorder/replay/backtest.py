"""Backtests without a socket: the account's frames as parsed events, in order, starting
with the exchange's snapshots as of the start, to drive a strategy's event handler directly.

    from recorder.replay.backtest import replay_events

    for event in replay_events("sqlite:///recorder.db", start="2026-12-01T10:00:00Z"):
        strategy.on(event.kind, event.record)     # "ws", "os", "wu", "tu", ...

The same frames ``serve-replay`` sends one client at speed 0, without the wire: the recorded
chanId 0 frames of each session in the range, a ``recorder.disconnected`` event where the
recording has a disconnect (the exchange's snapshots follow, as recorded), and, when the
start lies inside a session, the synthetic snapshots first (``synthetic`` is True). Records
are parsed exactly (amounts as ``Decimal``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from recorder.projections.values import parse_frame
from recorder.replay.gapfill import AFTER_LAST, gap_frames
from recorder.replay.server import recorded_sessions, session_frames
from recorder.replay.snapshots import snapshot_frames


@dataclass(frozen=True)
class ReplayEvent:
    received_at: datetime
    kind: str  # the frame's abbreviation ("os", "wu", "tu", "hb", ...) or recorder.disconnected
    record: Any  # the frame's payload (index 2), parsed exactly; None for hb and markers
    frame: str  # the frame's text
    synthetic: bool = False  # built from the state at the start, not recorded


def _event(received_at: datetime, text: str, synthetic: bool = False) -> ReplayEvent:
    frame = parse_frame(text)
    kind = frame[1] if isinstance(frame, list) and len(frame) > 1 else "?"
    record = frame[2] if isinstance(frame, list) and len(frame) > 2 else None
    return ReplayEvent(received_at, str(kind), record, text, synthetic)


def replay_events(
    source: str | Path,
    account: str | None = None,
    start: datetime | str | None = None,
    end: datetime | str | None = None,
    *,
    rest_frames: bool = False,
) -> Iterator[ReplayEvent]:
    """The account's events from ``start`` to ``end`` (a database URL or a config file);
    ``rest_frames``: the gaps' REST-learned fills and closes too, as synthetic frames after
    each reconnect (as ``serve-replay --rest-frames``)."""
    from recorder.data import as_time, open_recording

    t0, t1 = as_time(start, "start"), as_time(end, "end")
    with open_recording(source) as rec:
        chosen = rec.account(account)
        engine = rec.engine
        sessions = recorded_sessions(engine, chosen, t0, t1)
        filled = gap_frames(engine, chosen, sessions, t0, t1) if rest_frames else {}
        for n, session in enumerate(sessions):
            if n:
                at = session.authenticated_at or datetime.now(UTC)
                yield ReplayEvent(at, "recorder.disconnected", None, "")
                for text in filled.get(session.id, []):
                    yield _event(at, text, synthetic=True)
            elif t0 is not None and (
                session.authenticated_at is None or session.authenticated_at < t0
            ):
                for text in snapshot_frames(engine, chosen, session.id, t0):
                    yield _event(t0, text, synthetic=True)
            for received_at, text in session_frames(engine, session.id, t0, t1):
                yield _event(received_at, text)
        last = sessions[-1].authenticated_at if sessions else None
        for text in filled.get(AFTER_LAST, []):
            yield _event(last or datetime.now(UTC), text, synthetic=True)
