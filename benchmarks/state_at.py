"""``state --at`` latency on a long log, with stored snapshots vs a fold from scratch.

Builds a log of N events (default 1,000,000) from the simulator's model, folds the state
snapshots the live daemon keeps (every 5,000 positions), then times ``state_at`` for random
moments with snapshots, and once from scratch as the baseline. Prints one JSON object.
Target (issue): under 1 s per query on a 1,000,000-event log.

    python benchmarks/state_at.py [--events 1000000] [--queries 20] [--database URL]
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from rebuild import build_log

    from recorder.config import DatabaseConfig
    from recorder.projections.projector import AccountProjector
    from recorder.projections.snapshots import StateFold
    from recorder.projections.state import state_at
    from recorder.store import migrate
    from recorder.store.engine import create_engine

    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--queries", type=int, default=20)
    ap.add_argument("--database", default=None)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = args.database or f"sqlite:///{Path(tmp) / 'bench.db'}"
        engine = create_engine(DatabaseConfig(url=url))
        migrate.upgrade(engine)
        t = time.perf_counter()
        n = build_log(engine, args.events)
        build_s = time.perf_counter() - t
        t = time.perf_counter()
        AccountProjector(engine, "bench", only=StateFold.name).catch_up()
        snapshot_s = time.perf_counter() - t
        t0 = datetime(2026, 1, 1, tzinfo=UTC)
        rng = random.Random(1)
        times = []
        for _ in range(args.queries):
            at = t0 + timedelta(microseconds=rng.randrange(n))
            start = time.perf_counter()
            state_at(engine, "bench", at)
            times.append(time.perf_counter() - start)
        start = time.perf_counter()
        state_at(engine, "bench", t0 + timedelta(microseconds=n - 1), use_snapshots=False)
        scratch_s = time.perf_counter() - start
        engine.dispose()
    times.sort()
    print(
        orjson.dumps(
            {
                "benchmark": "state_at",
                "database": url.split(":")[0],
                "cpus": os.cpu_count(),
                "events": n,
                "build_log_s": round(build_s, 2),
                "fold_snapshots_s": round(snapshot_s, 2),
                "query_median_s": round(times[len(times) // 2], 4),
                "query_max_s": round(times[-1], 4),
                "baseline_from_scratch_s": round(scratch_s, 3),
                "speedup": round(scratch_s / times[len(times) // 2], 1),
                "target_max_s": 1.0,
            }
        ).decode()
    )


if __name__ == "__main__":
    main()
