"""The event log's append path alone, on SQLite, as the log grows: does a frame cost more to
append at 5,000,000 frames than at the start, and does SQLite's page cache change that?

Appends N frames (default 5,000,000: the simulator's account frames, 100,000 of them reused
in turn) through ``EventLog.append`` in batches of 2,000 (the writer's ``batch_max_frames``),
in one thread, no socket and no projectors: the part of the daemon that touches the growing
``events`` table and its three indexes. Measured twice in the same run, once with SQLite's
default page cache (2 MB) and once with ``PRAGMA cache_size`` at ``--cache-mib`` (default
32); in each, the last 1,000,000 frames against the first 1,000,000 (the baseline): the median
of their four windows of 250,000 frames each, since single windows of one run differ by up to
50 % on these machines. Prints one JSON object.

    python benchmarks/append_growth.py [--frames 5000000] [--cache-mib 32]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import event

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.firehose import make_frames  # noqa: E402
from benchmarks.run import result  # noqa: E402
from recorder.config import DatabaseConfig  # noqa: E402
from recorder.store import migrate  # noqa: E402
from recorder.store.engine import create_engine  # noqa: E402
from recorder.store.eventlog import EventLog, NewEvent  # noqa: E402
from recorder.store.sessions import open_session  # noqa: E402

BATCH = 2_000
WINDOW = 250_000
EDGE = 4  # windows at each end compared


def append_run(path: Path, frames: list[str], total: int, cache_kib: int | None) -> list[float]:
    """CPU seconds per 1,000 frames appended, per window of ``WINDOW`` frames."""
    engine = create_engine(DatabaseConfig(url=f"sqlite:///{path}"))
    if cache_kib is not None:

        @event.listens_for(engine, "connect")
        def _cache(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.execute(f"PRAGMA cache_size=-{cache_kib}")

    migrate.upgrade(engine)
    log = EventLog(engine)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    session = open_session(engine, "bench", "ws://127.0.0.1/ws/2", start)
    heads: dict[str, str] = {}
    windows: list[float] = []
    done = 0
    mark = time.process_time()
    while done < total:
        batch = [
            NewEvent(
                "bench",
                session,
                start + timedelta(microseconds=100 * (done + i)),
                0,
                "wu",
                None,
                done + i + 1,
                frames[(done + i) % len(frames)],
            )
            for i in range(BATCH)
        ]
        heads.update(log.append(batch, heads).last_hashes)
        done += BATCH
        if done % WINDOW == 0:
            now = time.process_time()
            windows.append(round((now - mark) / WINDOW * 1000, 5))
            mark = now
    engine.dispose()
    return windows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=5_000_000)
    ap.add_argument("--cache-mib", type=int, default=32)
    args = ap.parse_args()
    total = max(args.frames // WINDOW, 2 * EDGE) * WINDOW
    frames = make_frames(100_000)
    results = []
    began = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        for kib in (None, args.cache_mib * 1024):
            label = "default cache" if kib is None else f"{args.cache_mib} MiB cache"
            path = Path(tmp) / f"append-{kib}.db"
            windows = append_run(path, frames, total, kib)
            size_mb = path.stat().st_size / 2**20
            path.unlink()
            first = round(statistics.median(windows[:EDGE]), 5)
            last = round(statistics.median(windows[-EDGE:]), 5)
            results.append(
                result(
                    "append_growth",
                    "sqlite",
                    last,
                    "s CPU per 1,000 frames appended, the last 1,000,000 frames",
                    baseline=first,
                    ratio=round(last / first, 3),
                    target="ratio <= 1.2",
                    ok=last / first <= 1.2,
                    cache=label,
                    frames=total,
                    windows=windows,
                    database_mb=round(size_mb),
                )
            )
    print(
        orjson.dumps(
            {"seconds": round(time.monotonic() - began, 1), "results": results},
        ).decode()
    )


if __name__ == "__main__":
    main()
