"""Two recorder processes, different accounts, one PostgreSQL database (invariant 2)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from recorder.config import DatabaseConfig
from recorder.projections.rebuild import rebuild
from recorder.store.engine import create_engine
from recorder.store.eventlog import EventLog
from recorder.store.schema import events, projector_checkpoints
from tests.helpers import SimThread, everything, poll

ACCOUNTS = {
    "alpha": ("alpha-key", "alpha-secret-0a1b2c"),
    "beta": ("beta-key", "beta-secret-9z8y7x"),
}


@pytest.mark.postgres
@pytest.mark.slow
def test_two_processes_one_database(pg_url: str, tmp_path: Path) -> None:
    keys = dict(ACCOUNTS.values())
    with SimThread(seed=40, rate=400, api_keys=keys, connection_limit=None) as st:
        procs = []
        for name, (key, secret) in ACCOUNTS.items():
            cfg = tmp_path / f"{name}.toml"
            cfg.write_text(
                f'[database]\nurl = "{pg_url}"\n[writer]\nbatch_max_ms = 2\n'
                f'[[accounts]]\nname = "{name}"\nurl = "ws://127.0.0.1:{st.port}/ws/2"\n'
                f'api_key_env = "K_{name}"\napi_secret_env = "S_{name}"\nbackfill = false\n'
            )
            env = {**os.environ, f"K_{name}": key, f"S_{name}": secret}
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "recorder", "run", "--config", str(cfg)],
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
            )
        try:
            poll(lambda: len(st.sim.auth_requests) >= 2, "both recorders' auth")
            watcher = create_engine(DatabaseConfig(url=pg_url))
            log = EventLog(watcher)

            def committed_each(at_least: dict[str, int]) -> dict[str, int]:
                """Wait until every account has committed ``at_least`` events."""
                counts: dict[str, int] = {}

                def enough() -> bool:
                    counts.update({acc: log.count([acc]) for acc in ACCOUNTS})
                    return all(counts[a] >= n for a, n in at_least.items())

                poll(enough, f"committed: {at_least}")
                return counts

            before = committed_each({acc: 50 for acc in ACCOUNTS})  # both record
            st.run(st.sim.inject, "burst", 3000)  # on both connections at once
            committed_each({acc: n + 3000 for acc, n in before.items()})
            watcher.dispose()
            for p in procs:
                p.send_signal(signal.SIGTERM)
            outputs = [p.communicate(timeout=60) for p in procs]
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
    for p, (_out, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err[-2000:]

    engine = create_engine(DatabaseConfig(url=pg_url))
    with engine.connect() as conn:
        ranges = {
            acc: conn.execute(
                sa.select(sa.func.min(events.c.id), sa.func.max(events.c.id)).where(
                    events.c.account == acc
                )
            ).one()
            for acc in ACCOUNTS
        }
    (a_lo, a_hi), (b_lo, b_hi) = ranges["alpha"], ranges["beta"]
    assert a_lo < b_hi and b_lo < a_hi, "the two processes appended concurrently"
    for acc in ACCOUNTS:
        live = everything(engine, acc)
        with engine.connect() as conn:
            cps = set(
                conn.execute(
                    sa.select(projector_checkpoints.c.event_id).where(
                        projector_checkpoints.c.account == acc
                    )
                ).scalars()
            )
        assert cps == {ranges[acc][1]}, "every projector folded its account's whole log"
        assert live["orders"] and live["trades"]
        rebuild(engine, [acc])
        assert everything(engine, acc) == live, acc
    engine.dispose()
