"""The fold is a pure function of the log: batch size, rebuilds and restarts do not matter."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recorder.config import DatabaseConfig
from recorder.projections import snapshots
from recorder.projections.projector import AccountProjector
from recorder.projections.rebuild import rebuild
from recorder.projections.registry import FOLDS
from recorder.store import migrate
from recorder.store.engine import create_engine
from recorder.store.schema import projector_checkpoints
from tests.helpers import everything, store_log, synthetic_log

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def make_engine(tmp_path: Path) -> sa.Engine:
    tmp_path.mkdir(parents=True, exist_ok=True)
    engine = create_engine(DatabaseConfig(url=f"sqlite:///{tmp_path / 'folds.db'}"))
    migrate.upgrade(engine)
    return engine


# Each example records and rebuilds a log twice (batch 1 and 1000): CI gets a smaller budget.
EXAMPLES = 6 if os.environ.get("CI", "").lower() == "true" else 12


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    seed=st.integers(0, 10_000),
    steps=st.integers(20, 120),
    gap_every=st.sampled_from([0, 7, 13]),
    snap_every=st.sampled_from([0, 5, 17]),
)
def test_batch_size_does_not_change_the_result(
    tmp_path: Path, seed: int, steps: int, gap_every: int, snap_every: int
) -> None:
    engine = make_engine(tmp_path)
    account = f"h{seed}-{steps}-{gap_every}-{snap_every}"
    store_log(engine, account, synthetic_log(seed, steps, gap_every, snap_every))
    rebuild(engine, [account], batch=1)
    one = everything(engine, account)
    rebuild(engine, [account], batch=1000)
    thousand = everything(engine, account)
    engine.dispose()
    assert one == thousand
    assert one["orders"], "the log produced orders"
    assert any(cp[4] > 0 for cp in one["checkpoints"] if cp[0] == "orders")  # bad os skipped


def test_restart_mid_log_equals_one_pass(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A projector that stops and reloads its state from the database continues exactly
    (state snapshots included: taken at the same positions after restores)."""
    monkeypatch.setattr(snapshots, "SNAPSHOT_EVERY", 13)
    log = synthetic_log(5, 300, 11, 23)
    one_pass = make_engine(tmp_path / "one")
    store_log(one_pass, "a", log)
    rebuild(one_pass, ["a"])
    restarted = make_engine(tmp_path / "restarted")
    store_log(restarted, "a", log)
    # Fold a few events at a time, with a fresh projector (fresh memory) for every batch.
    for name in FOLDS:
        while AccountProjector(restarted, "a", batch=9, only=name).step() is not None:
            pass
    a, b = everything(one_pass, "a"), everything(restarted, "a")
    one_pass.dispose()
    restarted.dispose()
    assert a == b
    assert a["reconciliations"], "gaps in the log give reconciliation rows"
    assert len(a["state_snapshots"]) > 10


def test_one_pass_account_projector_equals_one_projector_per_projection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The daemon's one-task-per-account fold (AccountProjector, in small batches, with
    restarts) gives the rows of one projector per projection, state snapshots included."""
    monkeypatch.setattr(snapshots, "SNAPSHOT_EVERY", 17)
    log = synthetic_log(9, 400, 17, 29)
    each = make_engine(tmp_path / "each")
    store_log(each, "a", log)
    for name in FOLDS:
        AccountProjector(each, "a", batch=50, only=name).catch_up()
    together = make_engine(tmp_path / "together")
    store_log(together, "a", log)
    first = AccountProjector(together, "a", batch=37)
    first.step()
    first.step()
    for _ in range(5):  # restarted: restores from tables (state snapshots: shared folds)
        AccountProjector(together, "a", batch=37).step()
    AccountProjector(together, "a", batch=37).catch_up()
    a, b = everything(each, "a"), everything(together, "a")
    each.dispose()
    together.dispose()
    assert a == b
    assert a["orders"] and len(a["state_snapshots"]) > 10


def test_account_projector_with_one_projection_ahead(tmp_path: Path) -> None:
    """After `rebuild --projection orders` the orders checkpoint is ahead of the others: the
    one-pass fold skips what orders already has and still ends equal to a full rebuild."""
    log = synthetic_log(10, 300, 13, 23)
    engine = make_engine(tmp_path / "ahead")
    store_log(engine, "a", log)
    half = len(log) // 2
    AccountProjector(engine, "a", batch=40).catch_up(up_to=half)
    rebuild(engine, ["a"], only="orders")  # orders: to the end; the rest: at half
    # A step of the others (a restart before they reach orders' position) must not move the
    # stored orders checkpoint back: its rows are those of the end of the log.
    AccountProjector(engine, "a", batch=40).step()
    with engine.connect() as conn:
        stored = dict(
            conn.execute(
                sa.select(projector_checkpoints.c.projector, projector_checkpoints.c.event_id)
            ).all()
        )
    assert stored["orders"] == len(log) and stored["trades"] < len(log), stored
    AccountProjector(engine, "a", batch=40).catch_up()
    live = everything(engine, "a")
    rebuild(engine, ["a"])
    assert everything(engine, "a") == live
    engine.dispose()


def test_checkpoints_move_with_one_update_and_missing_rows_come_back(engine: sa.Engine) -> None:
    """While an account's folds keep the flags stored, only their positions are written (one
    UPDATE per account: the flags in the table stay as they are); a checkpoint row missing
    from the table (cleared by `rebuild --projection`) makes it write every row in full."""
    from recorder.projections.registry import make_folds
    from recorder.projections.writing import Position, write_all_checkpoints
    from recorder.store.schema import projector_checkpoints as pc

    folds = make_folds()

    def rows() -> dict[str, tuple[int, bool]]:
        with engine.connect() as conn:
            found = conn.execute(
                sa.select(pc.c.projector, pc.c.event_id, pc.c.stale).where(pc.c.account == "x")
            )
            return {name: (int(event_id), bool(stale)) for name, event_id, stale in found}

    with engine.begin() as conn:
        write_all_checkpoints(conn, [Position("x", folds, 10)])
        write_all_checkpoints(conn, [Position("y", folds, 10)])
        conn.execute(pc.update().where(pc.c.projector == "orders").values(stale=True))
    assert rows() == {**{f.name: (10, False) for f in folds}, "orders": (10, True)}

    with engine.begin() as conn:
        write_all_checkpoints(conn, [Position("x", folds, 20, moved_only=True)])
    assert rows() == {**{f.name: (20, False) for f in folds}, "orders": (20, True)}

    with engine.begin() as conn:
        conn.execute(pc.delete().where(pc.c.account == "x", pc.c.projector == "ledgers"))
        write_all_checkpoints(conn, [Position("x", folds, 30, moved_only=True)])
    assert rows() == {f.name: (30, False) for f in folds}  # in full: the folds' own flags
    with engine.connect() as conn:
        other = conn.execute(sa.select(pc.c.event_id).where(pc.c.account == "y")).scalars()
        assert set(other) == {10}
