"""`rebuild --jobs N`: the fold in worker processes gives the rows of a one-process rebuild,
a failing worker stops the others with the unit named, and a signal stops them all with
the committed batches kept."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pytest
import sqlalchemy as sa

from recorder.config import DatabaseConfig
from recorder.projections.parallel import TOGETHER, RebuildFailed, Unit, plan, rebuild_parallel
from recorder.projections.projector import AccountProjector
from recorder.projections.rebuild import rebuild
from recorder.projections.registry import FOLDS, PROJECTION_NAMES
from recorder.store import migrate
from recorder.store.engine import create_engine
from recorder.store.schema import projector_checkpoints
from tests.helpers import everything, poll, store_log, synthetic_log


def counts_of(by_account: dict[str, dict[str, int]]) -> Callable[[str], dict[str, int]]:
    return by_account.__getitem__


def test_plan_covers_every_projection_once_per_account_and_balances_the_shares() -> None:
    kinds = {k for make in FOLDS.values() for k in make().kinds}
    busy = {kind: 1000 for kind in kinds}
    one = plan(["a"], None, 2, counts_of({"a": busy}))
    assert len(one.units) == 2
    names = [n for u in one.units for n in u.projections]
    assert sorted(names) == sorted(PROJECTION_NAMES)  # each once
    # The state snapshots stay with the table folds they share, the wallets with the ledger
    # rows that explain their reconciliations.
    assert any(set(TOGETHER) <= set(u.projections) for u in one.units)
    assert {"wallets", "ledgers"} <= set(TOGETHER)
    heavy, light = one.units
    assert heavy.weight >= light.weight > heavy.weight / 2
    assert one.reads > one.events  # events read by both shares count twice in the reads
    # Enough accounts: each account whole, the one with more events first.
    quiet = {kind: 10 for kind in kinds}
    many = plan(["q", "b", "c", "d"], None, 2, counts_of(dict.fromkeys("qcd", quiet) | {"b": busy}))
    assert many.units[0].account == "b"
    assert all(u.projections == PROJECTION_NAMES for u in many.units)
    assert many.reads == many.events
    # One projection is never split.
    only = plan(["a"], "orders", 4, counts_of({"a": busy}))
    assert [u.projections for u in only.units] == [("orders",)]


@pytest.mark.parametrize("accounts", [1, 4], ids=["shares-of-one-account", "whole-accounts"])
def test_parallel_rebuild_equals_one_process(db_url: str, engine: sa.Engine, accounts: int) -> None:
    names = [f"acc{i}" for i in range(accounts)]
    for i, account in enumerate(names):
        store_log(
            engine, account, synthetic_log(seed=40 + i, steps=160, gap_every=37, snap_every=50)
        )
    rebuild(engine, names)
    one_process = {a: everything(engine, a) for a in names}
    seen: list[int] = []
    folded = rebuild(engine, names, progress=seen.append, jobs=2, db=DatabaseConfig(url=db_url))
    assert {a: everything(engine, a) for a in names} == one_process
    assert folded == rebuild(engine, names)  # the events a one-process rebuild folds
    assert sum(seen) >= folded  # every worker's batches were reported


def test_a_failing_worker_stops_the_rebuild_and_names_its_unit(tmp_path: Path) -> None:
    """Workers that cannot fold (here: a database without the schema) end the rebuild with
    the account, projections and cause, instead of hanging or dying silently."""
    empty = DatabaseConfig(url=f"sqlite:///{tmp_path / 'empty.db'}")
    units = [Unit("a", ("orders",), 10, 10), Unit("b", ("trades", "notifications"), 5, 5)]
    started = time.monotonic()
    with pytest.raises(RebuildFailed) as failed:
        rebuild_parallel(empty, units, jobs=2)
    text = str(failed.value)
    assert text.startswith("rebuild of ") and "failed: StoreError: database error" in text
    assert "no such table" in text
    assert time.monotonic() - started < 60


def test_sigterm_stops_every_worker_and_the_daemon_folds_on(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    engine = create_engine(DatabaseConfig(url=url))
    migrate.upgrade(engine)
    store_log(engine, "main", synthetic_log(seed=8, steps=10_000, gap_every=300, snap_every=500))
    proc = subprocess.Popen(
        [sys.executable, "-m", "recorder", "rebuild", "--jobs", "2"],
        env={**os.environ, "BFX_RECORDER_DATABASE_URL": url},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    children_file = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
    workers: set[int] = set()

    def folding() -> bool:
        # Two workers running (not multiprocessing's resource tracker) and a batch committed.
        workers.update(_workers(children_file.read_text().split()))
        with engine.connect() as conn:
            moved = conn.execute(
                sa.select(sa.func.max(projector_checkpoints.c.event_id))
            ).scalar_one()
        return len(workers) >= 2 and (moved or 0) > 0

    poll(folding, "the workers' first committed batch", timeout=120)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err
    assert "rebuild stopped by SIGTERM" in err.strip().splitlines()[-1]
    assert "Traceback" not in err
    for pid in workers:  # the parent's multiprocessing children (workers, resource tracker)
        poll(partial(_gone, pid), f"process {pid} ended")
    AccountProjector(engine, "main").catch_up()  # what the daemon does at its next start
    resumed = everything(engine, "main")
    rebuild(engine, ["main"])
    assert everything(engine, "main") == resumed
    engine.dispose()


def _gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def _workers(pids: list[str]) -> set[int]:
    """The spawned worker processes among ``pids``."""
    found = set()
    for pid in pids:
        try:
            if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.add(int(pid))
        except FileNotFoundError:
            pass
    return found


def test_a_worker_killed_ends_the_rebuild_with_its_exit_code(tmp_path: Path) -> None:
    """A worker that dies (killed, out of memory) is noticed while the other one waits: the
    test holds SQLite's write lock, so both workers are stuck at their first write."""
    path = tmp_path / "r.db"
    db = DatabaseConfig(url=f"sqlite:///{path}")
    engine = create_engine(db)
    migrate.upgrade(engine)
    names = ["acc0", "acc1"]
    for i, account in enumerate(names):
        store_log(engine, account, synthetic_log(seed=60 + i, steps=100, gap_every=0, snap_every=0))
    units = [Unit(a, PROJECTION_NAMES, 1, 1) for a in names]
    tasks = Path(f"/proc/{os.getpid()}/task")  # (children are listed per thread)
    outcome: list[BaseException] = []

    def run() -> None:
        try:
            rebuild_parallel(db, units, jobs=2)
        except BaseException as exc:
            outcome.append(exc)

    lock = sqlite3.connect(path)
    lock.execute("BEGIN IMMEDIATE")
    try:
        thread = threading.Thread(target=run)
        thread.start()
        found: set[int] = set()

        def two_workers() -> bool:
            for task in tasks.iterdir():
                with contextlib.suppress(FileNotFoundError):
                    found.update(_workers((task / "children").read_text().split()))
            return len(found) >= 2

        poll(two_workers, "two workers", timeout=120)
        os.kill(min(found), signal.SIGKILL)
        thread.join(60)
    finally:
        lock.rollback()
        lock.close()
    assert not thread.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], RebuildFailed), outcome
    assert "a worker process ended (exit codes [-9])" in str(outcome[0])
    for pid in found:
        poll(partial(_gone, pid), f"process {pid} ended")
    engine.dispose()
