"""``bfx-recorder report`` memory on a long log: peak RSS on a small log (the baseline, same
run) vs a large one. The report streams (``yield_per`` reads, a chart thinned to a bounded
number of points), so its peak memory should not grow with the log.

Builds two logs from the simulator's model (account frames, with the ledger answered every
2,000 frames as ``rest.ledgers-hist`` rows, as the daemon's ledger windows record it), folds
them (``rebuild``), then runs ``bfx-recorder report --format html`` over the whole period of
each as a process, and reads the process's peak RSS (``ru_maxrss`` of a child). Prints one
JSON object. Target (audit issue): the peak on 5,000,000 events within 20 % of the peak on
100,000 (``--events 5000000``: about 15 minutes on SQLite).

    python benchmarks/report_memory.py [--small 100000] [--events 1000000] [--database URL]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent

PEAK_ERR = (
    "import resource, subprocess, sys\n"
    "done = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL)\n"
    "print(done.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
)


def build_log(engine: Any, n: int) -> tuple[int, int]:
    """``n`` account frames and the ledger rows of their balance changes; returns (events,
    ledger rows)."""
    from recorder.protocol import layouts as L
    from recorder.simulator.model import AccountModel
    from recorder.store.eventlog import EventLog, NewEvent
    from recorder.store.sessions import open_session

    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    sid = open_session(engine, "bench", "ws://127.0.0.1/ws/2", t0)
    ms = 1_767_225_600_000  # t0 in ms: ledger rows and frames share the timeline
    total = 0
    model = AccountModel(seed=5, clock=lambda: ms + total // 1000)
    items: list[Any] = []
    hashes: dict[str, str] = {}
    log = EventLog(engine)
    told = 0  # ledger entries already answered

    def add(kind: str, frame: str) -> None:
        nonlocal total
        at = t0 + timedelta(milliseconds=total // 1000, microseconds=total % 1000)
        items.append(NewEvent("bench", sid, at, 0, kind, None, None, frame))
        total += 1

    for abbr, payload in model.snapshots():
        add(abbr, orjson.dumps([0, abbr, payload]).decode())
    since_answer = 0
    while total < n:
        for abbr, payload in model.step():
            add(abbr, orjson.dumps([0, abbr, payload]).decode())
            since_answer += 1
        if since_answer >= 2000:
            since_answer = 0
            rows = [L.LEDGER.array(e) for e in model.ledger[told:]]
            told = len(model.ledger)
            add("rest.ledgers-hist", orjson.dumps(rows).decode())
        if len(items) >= 5000:
            hashes.update(log.append(items, hashes).last_hashes)
            items.clear()
    if items:
        log.append(items, hashes)
    return total, told


def measure(url: str, n: int, tmp: Path) -> dict[str, Any]:
    from recorder.config import DatabaseConfig
    from recorder.projections.rebuild import rebuild
    from recorder.store import migrate
    from recorder.store.engine import create_engine

    engine = create_engine(DatabaseConfig(url=url))
    migrate.upgrade(engine)
    t = time.perf_counter()
    events, ledger = build_log(engine, n)
    build_s = time.perf_counter() - t
    t = time.perf_counter()
    rebuild(engine, ["bench"])
    rebuild_s = time.perf_counter() - t
    engine.dispose()
    env = {**os.environ, "BFX_RECORDER_DATABASE_URL": url}
    cmd = [sys.executable, "-c", PEAK_ERR, sys.executable, "-m", "recorder"]
    cmd += ["report", "--account", "bench", "--from", "2000-01-01", "--to", "2100-01-01"]
    cmd += ["--format", "html", "--output", str(tmp / f"report-{n}.html")]
    t = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True, cwd=ROOT)
    report_s = time.perf_counter() - t
    code, peak_kib = (int(x) for x in done.stdout.split())
    if code not in (0, 1):
        raise SystemExit(f"report failed (exit {code}) on {n} events: {done.stderr[-2000:]}")
    return {
        "events": events,
        "ledger_rows": ledger,
        "build_s": round(build_s, 1),
        "rebuild_s": round(rebuild_s, 1),
        "report_s": round(report_s, 2),
        "report_exit": code,  # 0: balanced; 1: a difference listed (not expected here)
        "peak_rss_mib": round(peak_kib / 1024, 1),
    }


def main() -> None:
    sys.path.insert(0, str(ROOT))
    ap = argparse.ArgumentParser()
    ap.add_argument("--small", type=int, default=100_000)
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument(
        "--database",
        default=None,
        help="a PostgreSQL URL whose database is dropped of its tables first (default: SQLite "
        "files in a temporary folder)",
    )
    args = ap.parse_args()
    runs = []
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        for n in (args.small, args.events):
            if args.database:
                import sqlalchemy as sa

                wipe = sa.create_engine(args.database)
                with wipe.begin() as conn:
                    conn.exec_driver_sql("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
                wipe.dispose()
                url = args.database
            else:
                url = f"sqlite:///{tmp / f'bench-{n}.db'}"
            runs.append(measure(url, n, tmp))
    small, large = runs
    ratio = large["peak_rss_mib"] / small["peak_rss_mib"]
    print(
        orjson.dumps(
            {
                "metric": "report_peak_rss",
                "database": "postgresql" if args.database else "sqlite",
                "baseline": small,
                "measured": large,
                "ratio": round(ratio, 3),
                "target": "<= 1.2",
                "pass": ratio <= 1.2,
            }
        ).decode()
    )


if __name__ == "__main__":
    main()
