"""``export all --format parquet`` against ``rebuild`` on the same log, and its memory.

Builds a log of N events (default 1,000,000) from the simulator's model (with ledger answers,
as ``report_memory.py`` does), times ``rebuild`` (the baseline, same run), then exports every
table to Parquet in a child process that samples its resident memory (``/proc/self/statm``)
after the first batch written and at the end. Prints one JSON object. Targets (exports
issue): export time under 2x the rebuild's; RSS at the end within 20 % of RSS after the first
batch.

    python benchmarks/export_parquet.py [--events 1000000] [--database URL]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent

CHILD = """
import os, sys, time, orjson
from pathlib import Path
sys.path.insert(0, sys.argv[3])
from recorder.config import DatabaseConfig
from recorder.export.files import Range, plan, write_file
from recorder.export.bitfinex import DateStyle
from recorder.store.engine import create_engine

PAGE = os.sysconf("SC_PAGE_SIZE")

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE / 2**20

engine = create_engine(DatabaseConfig(url=sys.argv[1]))
out = Path(sys.argv[2])
samples = {}
def tick(n):
    if "first_batch_mib" not in samples:
        samples["first_batch_mib"] = rss()
start = time.perf_counter()
rows = 0
with engine.connect() as conn:
    for job in plan("all", "parquet", DateStyle()):
        rng = Range("bench", None, None)
        rows += write_file(job, conn, rng, out / job.file_name(rng), tick)
samples["seconds"] = time.perf_counter() - start
samples["end_mib"] = rss()
samples["rows"] = rows
print(orjson.dumps(samples).decode())
"""


def main() -> None:
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from report_memory import build_log

    from recorder.config import DatabaseConfig
    from recorder.projections.rebuild import rebuild
    from recorder.store import migrate
    from recorder.store.engine import create_engine

    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--database", default=None, help="a PostgreSQL URL (default: SQLite)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        url = args.database or f"sqlite:///{tmp / 'bench.db'}"
        engine = create_engine(DatabaseConfig(url=url))
        migrate.upgrade(engine)
        events, ledger = build_log(engine, args.events)
        t = time.perf_counter()
        rebuild(engine, ["bench"])
        rebuild_s = time.perf_counter() - t
        engine.dispose()
        out = tmp / "out"
        out.mkdir()
        child = subprocess.run(
            [sys.executable, "-c", CHILD, url, str(out), str(ROOT)],
            capture_output=True,
            text=True,
            check=True,
            env=os.environ,
        )
        found = orjson.loads(child.stdout)
        size = sum(p.stat().st_size for p in out.iterdir())
    ratio = found["seconds"] / rebuild_s
    growth = found["end_mib"] / found["first_batch_mib"]
    print(
        orjson.dumps(
            {
                "metric": "export_parquet_vs_rebuild",
                "database": "postgresql" if args.database else "sqlite",
                "events": events,
                "ledger_rows": ledger,
                "rows_exported": found["rows"],
                "parquet_mib": round(size / 2**20, 1),
                "baseline_rebuild_s": round(rebuild_s, 1),
                "export_s": round(found["seconds"], 1),
                "ratio": round(ratio, 3),
                "target_ratio": "< 2",
                "rss_first_batch_mib": round(found["first_batch_mib"], 1),
                "rss_end_mib": round(found["end_mib"], 1),
                "rss_growth": round(growth, 3),
                "target_growth": "<= 1.2",
                "pass": ratio < 2 and growth <= 1.2,
            }
        ).decode()
    )


if __name__ == "__main__":
    main()
