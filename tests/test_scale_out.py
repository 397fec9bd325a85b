"""Scale-out (performance issue, item 4): several ``run --max-accounts N`` processes share one
configuration and one PostgreSQL database; each records at most N accounts, the others wait,
and a killed process's accounts are taken over by the survivors, with nothing lost."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from recorder.audit.verify import verify
from recorder.config import DatabaseConfig
from recorder.store import migrate
from recorder.store.engine import create_engine
from recorder.store.eventlog import EventLog
from recorder.store.lease import lease_for
from tests.helpers import SimThread, poll

ACCOUNTS = {f"acc{i}": (f"key-{i}", f"secret-{i}-0a1b2c3d") for i in range(4)}
MAX = 2
RUN = [sys.executable, "-m", "recorder", "run"]
STARTED = "accounts (--max-accounts"  # the line each process logs once it took its leases


def holders(engine: sa.Engine) -> dict[str, int | None]:
    """Each account's lease holder, as a pid (None: nobody holds it)."""
    found: dict[str, int | None] = {}
    for account in ACCOUNTS:
        who = lease_for(engine, account).holder()
        match = re.match(r"pid (\d+) ", who or "")
        found[account] = int(match.group(1)) if match else None
    return found


def start(cfg: Path, env: dict[str, str], log_to: Path) -> subprocess.Popen[str]:
    with log_to.open("w") as err:
        return subprocess.Popen(
            [*RUN, "--config", str(cfg), "--max-accounts", str(MAX)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=err,
            text=True,
        )


@pytest.mark.postgres
@pytest.mark.slow
def test_processes_share_the_fleet_and_take_over_a_killed_ones_accounts(
    pg_url: str, tmp_path: Path
) -> None:
    engine = create_engine(DatabaseConfig(url=pg_url))
    migrate.upgrade(engine)
    keys = dict(ACCOUNTS.values())
    cfg = tmp_path / "fleet.toml"
    cfg.write_text(
        f'[database]\nurl = "{pg_url}"\n[writer]\nbatch_max_ms = 2\n'
        + "".join(
            f'[[accounts]]\nname = "{name}"\nurl = "ws://127.0.0.1:{{port}}/ws/2"\n'
            f'api_key_env = "K_{name}"\napi_secret_env = "S_{name}"\nbackfill = false\n'
            for name in ACCOUNTS
        )
    )
    env = {**os.environ}
    for name, (key, secret) in ACCOUNTS.items():
        env[f"K_{name}"], env[f"S_{name}"] = key, secret
    with SimThread(seed=61, rate=200, api_keys=keys, connection_limit=None) as st:
        cfg.write_text(cfg.read_text().replace("{port}", str(st.port)))
        # Their lines go to files, read as they come: a pipe read only at the end could fill.
        logs = [tmp_path / f"run{i}.log" for i in range(3)]
        procs = [start(cfg, env, path) for path in logs]
        pids = {p.pid for p in procs}
        try:
            # Every process past its start-up leases (a slow starter taking the orphans at
            # its start, right after the kill, would not be a take-over), and every account
            # recorded once, by one of the three, none with more than MAX.
            poll(
                lambda: all(STARTED in path.read_text() for path in logs),
                "every process started",
                timeout=60,
            )
            poll(lambda: all(h in pids for h in holders(engine).values()), "every lease taken")
            first = holders(engine)
            share = {pid: sum(1 for h in first.values() if h == pid) for pid in pids}
            assert max(share.values()) <= MAX and sum(share.values()) == len(ACCOUNTS), share
            log = EventLog(engine)
            poll(lambda: all(log.count([a]) >= 30 for a in ACCOUNTS), "every account records")

            victim = next(p for p in procs if share[p.pid] == max(share.values()))
            orphans = [a for a, h in first.items() if h == victim.pid]
            before = {a: log.count([a]) for a in orphans}
            victim.kill()  # SIGKILL: no drain, no release
            killed_at = time.monotonic()
            victim.wait(10)
            survivors = pids - {victim.pid}
            poll(
                lambda: all(holders(engine)[a] in survivors for a in orphans),
                "the orphans taken over",
                timeout=60,
            )
            took = time.monotonic() - killed_at
            poll(
                lambda: all(log.count([a]) > before[a] + 20 for a in orphans),
                "the orphans recorded again",
                timeout=60,
            )
            print(f"take-over: {len(orphans)} accounts re-leased {took:.2f} s after the kill")
            after = holders(engine)
            assert all(sum(1 for h in after.values() if h == pid) <= MAX for pid in survivors), (
                after
            )
            for p in procs:
                if p is not victim:
                    p.send_signal(signal.SIGTERM)
            for p in procs:
                if p is not victim:
                    p.wait(60)
            outputs = {p.pid: path.read_text() for p, path in zip(procs, logs, strict=True)}
            del outputs[victim.pid]
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
        st.call(st.sim.pause)
        sent = {n: st.sim.frames_for(n) for n in range(1, st.sim.connection_count + 1)}
    for p in procs:
        if p is not victim:
            assert p.returncode == 0, outputs[p.pid][-2000:]
    taker_logs = "".join(outputs.values())
    assert all(f"lease taken over: recording account={a}" in taker_logs for a in orphans)

    # Nothing lost: each session's socket frames are what one connection was sent, verbatim,
    # in order (the killed process's last sessions lost at most their uncommitted tail), and
    # every account's chain verifies.
    unused = set(sent)
    for account in ACCOUNTS:
        assert verify(engine, account).ok, account
        by_session: dict[int, list[str]] = {}
        for e in EventLog(engine).iterate(account):
            if e.session_id is not None and not e.kind.startswith(("recorder.", "rest.")):
                by_session.setdefault(e.session_id, []).append(e.frame)
        assert len(by_session) >= (2 if account in orphans else 1), account
        for recorded in by_session.values():
            match = next((n for n in sorted(unused) if sent[n][: len(recorded)] == recorded), None)
            assert match is not None, f"{account}: a session's frames were not sent as recorded"
            unused.discard(match)
    engine.dispose()


@pytest.mark.postgres
def test_leases_share_one_connection_outside_the_stores_pool(pg_url: str) -> None:
    """Forty accounts' leases held by one process at once: one server connection holds them
    all (a connection each used up the store's pool at 15, and a 100-account fleet the
    server's max_connections), the store's pool still answers, a second lease object of a
    held account is refused in this process too, and the locks go with the connection."""
    engine = create_engine(DatabaseConfig(url=pg_url), pool_timeout=5)
    migrate.upgrade(engine)
    leases = [lease_for(engine, f"many{i}") for i in range(40)]
    name = f"bfx-recorder pid {os.getpid()} on %"
    count = sa.text("SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE :n")
    try:
        assert all(lease.try_acquire() for lease in leases)
        assert not lease_for(engine, "many7").try_acquire()  # re-entrant locks: refused here
        with engine.connect() as conn:
            assert conn.execute(count, {"n": name}).scalar() == 1
        assert all(lease.still_held() for lease in leases)
        leases[0].release()
        assert not leases[0].still_held() and leases[1].still_held()
        other = create_engine(DatabaseConfig(url=pg_url))  # as another process would see it
        theirs = lease_for(other, "many0")
        assert theirs.try_acquire()  # released: free at once
        assert not lease_for(other, "many1").try_acquire()
        theirs.release()
        other.dispose()
    finally:
        for lease in leases:
            lease.release()
    with engine.connect() as conn:  # no lease left: no connection kept
        assert conn.execute(count, {"n": name}).scalar() == 0
    engine.dispose()
