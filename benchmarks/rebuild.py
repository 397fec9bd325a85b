"""Fold benchmark: events folded per second by ``rebuild`` vs a bare ``SELECT frame`` scan
with orjson over the same log, measured in the same run.

Builds a log of N events from the simulator's model (snapshots, updates, gaps), then times:

* baseline: ``SELECT frame FROM events ORDER BY id`` streamed, each frame ``orjson.loads``;
* rebuild: every projection cleared and refolded from scratch (``--jobs N``: in N worker
  processes).

Prints one JSON object with events/s of each and ``ratio`` = rebuild / baseline (design.md
target: >= 0.5; issue target: >= 50,000 events/s absolute on the reference machine).

    python benchmarks/rebuild.py [--events 200000] [--database URL] [--jobs 2]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import sqlalchemy as sa


def build_log(engine: sa.Engine, n: int, account: str = "bench", seed: int = 3) -> int:
    from recorder.simulator.model import AccountModel
    from recorder.store.eventlog import EventLog, NewEvent
    from recorder.store.sessions import open_session

    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    sid = open_session(engine, account, "ws://127.0.0.1/ws/2", t0)
    model = AccountModel(seed=seed, clock=lambda: 1_700_000_000_000)
    items: list[NewEvent] = []
    hashes: dict[str, str] = {}
    total = 0
    step = 0

    def add(kind: str, frame: str) -> None:
        nonlocal total
        items.append(
            NewEvent(account, sid, t0 + timedelta(microseconds=total), 0, kind, None, None, frame)
        )
        total += 1

    for abbr, payload in model.snapshots():
        add(abbr, orjson.dumps([0, abbr, payload]).decode())
    while total < n:
        step += 1
        for abbr, payload in model.step():
            add(abbr, orjson.dumps([0, abbr, payload]).decode())
        if step % 500 == 0:
            add("recorder.disconnected", '{"event":"recorder.disconnected","reason":"closed"}')
            for abbr, payload in model.snapshots():
                add(abbr, orjson.dumps([0, abbr, payload]).decode())
        if len(items) >= 5000:
            hashes.update(EventLog(engine).append(items, hashes).last_hashes)
            items.clear()
    if items:
        EventLog(engine).append(items, hashes)
    return total


def scan(engine: sa.Engine) -> float:
    start = time.perf_counter()
    with engine.connect() as conn:
        result = conn.execution_options(stream_results=True, yield_per=5000).exec_driver_sql(
            "SELECT frame FROM events ORDER BY id"
        )
        for (frame,) in result:
            orjson.loads(frame)
    return time.perf_counter() - start


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from recorder.config import DatabaseConfig
    from recorder.projections.rebuild import rebuild
    from recorder.store import migrate
    from recorder.store.engine import create_engine

    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--database", default=None)
    ap.add_argument("--jobs", type=int, default=1)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = args.database or f"sqlite:///{Path(tmp) / 'bench.db'}"
        engine = create_engine(DatabaseConfig(url=url))
        migrate.upgrade(engine)
        n = build_log(engine, args.events)
        base = scan(engine)
        start = time.perf_counter()
        rebuild(engine, ["bench"], jobs=args.jobs, db=DatabaseConfig(url=url))
        folded = time.perf_counter() - start
        engine.dispose()
    print(
        orjson.dumps(
            {
                "benchmark": "rebuild",
                "database": url.split(":")[0],
                "cpus": os.cpu_count(),
                "events": n,
                "jobs": args.jobs,
                "baseline": {"seconds": round(base, 3), "eps": round(n / base)},
                "rebuild": {"seconds": round(folded, 3), "eps": round(n / folded)},
                "ratio": round(base / folded, 3),
                "target_ratio": 0.5,
            }
        ).decode()
    )


if __name__ == "__main__":
    main()
