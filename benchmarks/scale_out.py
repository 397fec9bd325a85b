"""Scale-out (performance issue, item 4): P processes of ``bfx-recorder run --max-accounts N``
sharing one configuration of A accounts and one PostgreSQL database, fed by the firehose
(every connection gets the same frames at ``--rate`` frames/s). Each process keeps the
default connection limit (5 connections per 15 s to one host), as separate hosts would.

Measures: how the accounts are spread; how long until every account has an authenticated
session (the baseline: the connection limit's pace for the largest share); the processes' CPU
in a steady window; after SIGKILL of the process with the most accounts, how long until the
survivors have taken over as many of its accounts as their room allows (and which wait);
nothing lost (each session's frames a verbatim prefix of what the firehose sent, every
account's chain verifies). Prints one JSON object.

    python -m benchmarks.scale_out [--accounts 100] [--processes 3] [--max-accounts 40]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa

from benchmarks.firehose import make_frames
from benchmarks.run import cpu_seconds, database, engine_for, firehose

ROOT = Path(__file__).resolve().parent.parent
RUN = [sys.executable, "-m", "recorder", "run"]
CONNECTIONS_PER_WINDOW, WINDOW_S = 5, 15.0  # the recorder's default connection limit


def holders(engine: sa.Engine) -> dict[str, int]:
    """Advisory locks granted, by holder pid (from the holder's application_name)."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT a.application_name, count(*) FROM pg_locks l "
                "JOIN pg_stat_activity a ON a.pid = l.pid "
                "WHERE l.locktype = 'advisory' AND l.granted "
                "AND a.application_name LIKE 'bfx-recorder pid %' GROUP BY 1"
            )
        ).all()
    return {int(name.split()[2]): int(n) for name, n in rows}


def authenticated_since(engine: sa.Engine, since: float) -> set[str]:
    """Accounts with a session authenticated after the wall time ``since``."""
    from datetime import UTC, datetime

    at = datetime.fromtimestamp(since, UTC)
    with engine.connect() as conn:
        return set(
            conn.execute(
                sa.text(
                    "SELECT DISTINCT account FROM sessions WHERE auth_status = 'OK' "
                    "AND authenticated_at >= :at"
                ),
                {"at": at},
            ).scalars()
        )


def wait_for(condition: Any, timeout: float) -> float | None:
    """Seconds until ``condition()`` held (checked every 0.25 s), None on timeout."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if condition():
            return time.monotonic() - start
        time.sleep(0.25)
    return None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--accounts", type=int, default=100)
    ap.add_argument("--processes", type=int, default=3)
    ap.add_argument("--max-accounts", type=int, default=40)
    ap.add_argument("--rate", type=float, default=10.0)
    ap.add_argument("--steady-s", type=float, default=20.0)
    args = ap.parse_args()
    n_frames = int(args.rate * 900)  # more than the run lasts
    frames = make_frames(n_frames)
    out: dict[str, Any] = {"benchmark": "scale_out", "database": "postgresql", **vars(args)}
    tmp = Path(tempfile.mkdtemp(prefix="bfx-scale-"))
    fire, port = firehose(n_frames, args.rate)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        with database("postgresql", tmp) as url:
            engine = engine_for(url)
            names = [f"a{i:03d}" for i in range(args.accounts)]
            cfg = tmp / "fleet.toml"
            cfg.write_text(
                f'[database]\nurl = "{url}"\n'
                + "".join(
                    f'[[accounts]]\nname = "{n}"\nurl = "ws://127.0.0.1:{port}/ws/2"\n'
                    f'api_key_env = "K_{n}"\napi_secret_env = "S_{n}"\nbackfill = false\n'
                    for n in names
                )
            )
            env = {**os.environ}
            for n in names:
                env[f"K_{n}"], env[f"S_{n}"] = f"key-{n}", f"secret-{n}"
            started = time.time()
            for i in range(args.processes):
                procs.append(
                    subprocess.Popen(
                        [*RUN, "--config", str(cfg), "--max-accounts", str(args.max_accounts)],
                        env=env,
                        cwd=ROOT,
                        stdout=subprocess.DEVNULL,
                        stderr=open(tmp / f"p{i}.log", "wb"),  # noqa: SIM115
                    )
                )
            pids = [p.pid for p in procs]
            expected = min(args.accounts, args.processes * args.max_accounts)
            all_in = wait_for(
                lambda: len(authenticated_since(engine, started)) >= expected, timeout=600
            )
            share = holders(engine)
            out["distribution"] = sorted(share.get(pid, 0) for pid in pids)
            largest = max(share.values())
            pace = (largest - CONNECTIONS_PER_WINDOW) / CONNECTIONS_PER_WINDOW * WINDOW_S
            out["all_connected_s"] = None if all_in is None else round(all_in, 1)
            out["connection_limit_pace_s"] = round(max(pace, 0.0), 1)
            # Steady window: CPU of every process.
            cpu0 = {pid: cpu_seconds(pid) for pid in pids}
            time.sleep(args.steady_s)  # a measurement window, not a synchronisation
            out["steady_cpu_cores"] = round(
                sum(cpu_seconds(pid) - cpu0[pid] for pid in pids) / args.steady_s, 3
            )
            # Kill the process with the most accounts.
            victim = max(procs, key=lambda p: share.get(p.pid, 0))
            orphans = share.get(victim.pid, 0)
            survivors = [p for p in procs if p is not victim]
            room = sum(args.max_accounts - share.get(p.pid, 0) for p in survivors)
            takeable = min(orphans, room)
            killed_at = time.time()
            victim.send_signal(signal.SIGKILL)
            victim.wait(10)

            def taken() -> bool:
                now = holders(engine)
                return sum(now.get(p.pid, 0) for p in survivors) >= (
                    sum(share.get(p.pid, 0) for p in survivors) + takeable
                )

            leased = wait_for(taken, timeout=300)
            # Only the taken-over accounts authenticate after the kill.
            recorded = wait_for(
                lambda: len(authenticated_since(engine, killed_at)) >= takeable, timeout=600
            )
            out["killed_accounts"] = orphans
            out["survivors_room"] = room
            out["taken_over"] = sum(holders(engine).get(p.pid, 0) for p in survivors) - sum(
                share.get(p.pid, 0) for p in survivors
            )
            out["left_waiting"] = orphans - out["taken_over"]
            out["takeover_leased_s"] = None if leased is None else round(leased, 1)
            out["takeover_recording_s"] = (
                None if recorded is None else round(time.time() - killed_at, 1)
            )  # from the kill: the lease wait and the connections
            # The baseline: the connection limit's pace for the most one survivor took.
            now = holders(engine)
            most = max(now.get(p.pid, 0) - share.get(p.pid, 0) for p in survivors)
            out["takeover_pace_s"] = round(
                max(most - CONNECTIONS_PER_WINDOW, 0) / CONNECTIONS_PER_WINDOW * WINDOW_S, 1
            )
            out["taken_by_survivor"] = sorted(
                now.get(p.pid, 0) - share.get(p.pid, 0) for p in survivors
            )
            for p in survivors:
                p.send_signal(signal.SIGTERM)
            out["exit_codes"] = [p.wait(120) for p in survivors]
            fire.kill()
            out["checks"] = check(engine, names, frames)
            engine.dispose()
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        if fire.poll() is None:
            fire.kill()
    print(orjson.dumps(out).decode())


def check(engine: sa.Engine, names: list[str], frames: list[str]) -> dict[str, Any]:
    """Every session's socket frames (events and heartbeats aside) a verbatim prefix of what
    the firehose sends each connection; every account's chain verifies."""
    from recorder.audit.verify import verify
    from recorder.store.eventlog import EventLog

    log = EventLog(engine)
    sessions = bad = chains_ok = 0
    recorded_frames = 0
    for name in names:
        by_session: dict[int, list[str]] = {}
        for e in log.iterate(name):
            if e.session_id is None or e.kind.startswith(("recorder.", "rest.")):
                continue
            if e.frame.startswith("{") or e.frame == '[0,"hb"]':
                continue
            by_session.setdefault(e.session_id, []).append(e.frame)
        for got in by_session.values():
            sessions += 1
            recorded_frames += len(got)
            bad += got != frames[: len(got)]
        chains_ok += verify(engine, name).ok
    return {
        "sessions": sessions,
        "frames": recorded_frames,
        "sessions_not_a_prefix": bad,
        "chains_verified": chains_ok,
        "accounts": len(names),
    }


if __name__ == "__main__":
    main()
