"""Replay: the stream, state as of T, the Bitfinex-speaking replay server, verify, status."""

from __future__ import annotations

import asyncio
import random
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa
import trio
from click.testing import CliRunner

from recorder.cli import main
from recorder.config import DatabaseConfig
from recorder.projections.projector import AccountProjector
from recorder.projections.rebuild import rebuild
from recorder.projections.registry import FOLDS
from recorder.projections.snapshots import StateFold
from recorder.projections.state import state_at
from recorder.replay.server import ReplayServer
from recorder.store import migrate
from recorder.store.engine import create_engine
from recorder.store.schema import events, state_snapshots
from tests.helpers import (
    KEY,
    SECRET,
    _fold,
    chan0,
    everything,
    make_recorder,
    official_client,
    record_simulation,
    serving_in_a_thread,
    store_log,
    synthetic_log,
)
from tests.helpers import LOG_T0 as T0


def cli(db_url: str, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), env={"BFX_RECORDER_DATABASE_URL": db_url})
    return result.exit_code, result.output


def sqlite_engine(path: Path) -> sa.Engine:
    engine = create_engine(DatabaseConfig(url=f"sqlite:///{path}"))
    migrate.upgrade(engine)
    return engine


def without_ids(state: dict[str, Any]) -> dict[str, Any]:
    """Projection rows compared across two logs: log positions differ, values must not."""
    out: dict[str, Any] = {}
    for name, rows in state.items():
        if name == "checkpoints":
            out[name] = [(p, stale, synced, skipped) for p, _e, stale, synced, skipped in rows]
        elif name == "reconciliations":
            out[name] = sorted(
                ((p, k, prob, f, s, x is None) for _e, p, k, prob, f, s, x in rows),
                key=lambda t: orjson.dumps(t, option=orjson.OPT_SORT_KEYS),
            )
        elif name == "state_snapshots":
            continue  # taken at log positions, which differ
        elif name == "wallet_history":
            # Keyed and dated by log position and arrival time, which differ; the sequence
            # of balances per wallet must not.
            rows = sorted(rows, key=lambda r: (r["wallet_type"], r["currency"], r["ref"]))
            out[name] = [
                {k: v for k, v in r.items() if k not in ("event_id", "ref", "at")} for r in rows
            ]
        else:
            # (log positions; for a fill's effect, whether a frame carries it must not differ)
            positions = ("event_id", "trade_event_id", "confirmed_by")
            out[name] = [
                {
                    **{k: v for k, v in r.items() if k not in positions},
                    "carried": r.get("event_id") is not None,
                }
                for r in rows
            ]
    return out


async def test_round_trip_through_serve_replay(tmp_path: Path, engine: sa.Engine) -> None:
    """Invariant 4: record A, serve A at speed 0, record that into B: same frames, same rows."""
    source = sqlite_engine(tmp_path / "a.db")
    await record_simulation(source, 501, ["malformed", "drop", "info-20051", "drop-silent"])
    server = ReplayServer(source, "main", speed=0)
    assert len(server.sessions) == 4
    async with trio.open_nursery() as nursery:
        port = await nursery.start(server.serve)
        recorder = make_recorder(engine, port)
        await nursery.start(recorder.run)
        with trio.fail_after(30):
            while server.sessions_served < len(server.sessions) or server.frames_sent < len(
                chan0(source)
            ):
                await trio.sleep(0.05)
            while len(chan0(engine)) < len(chan0(source)):
                await trio.sleep(0.05)
        recorder.stop()
        await recorder.finished.wait()
        nursery.cancel_scope.cancel()
    assert chan0(engine) == chan0(source)
    with engine.connect() as conn:
        reasons = [
            r for (r,) in conn.execute(sa.text("SELECT end_reason FROM sessions ORDER BY id"))
        ]
    assert reasons == ["closed", "closed", "closed", "shutdown"]  # 1012 at each recorded gap
    assert without_ids(everything(engine)) == without_ids(everything(source))
    source.dispose()


def test_official_client_backtests_against_serve_replay(tmp_path: Path) -> None:
    source = sqlite_engine(tmp_path / "a.db")
    trio.run(record_simulation, source, 502, [])
    server = ReplayServer(source, "main", speed=0, api_keys={KEY: SECRET})
    received: list[tuple[str, Any]] = []

    abbrev = {
        "order_snapshot": "os",
        "order_new": "on",
        "order_update": "ou",
        "order_cancel": "oc",
        "wallet_snapshot": "ws",
        "wallet_update": "wu",
        "trade_execution": "te",
        "trade_execution_update": "tu",
    }
    recorded = [orjson.loads(f)[1] for f in chan0(source)]
    wanted = [k for k in recorded if k in set(abbrev.values())]

    async def drive(client: Any) -> None:
        task = asyncio.create_task(client.wss.start())
        for _ in range(800):  # until the handlers have seen as many as were recorded
            if sum(1 for n, _ in received if n in abbrev) >= len(wanted):
                break
            await asyncio.sleep(0.025)
        await client.wss.close()
        await asyncio.wait_for(task, 10)

    with serving_in_a_thread(server) as port:
        asyncio.run(drive(official_client(port, received)))
    # The handlers saw the recorded data frames, in recorded order.
    got = [abbrev[n] for n, _ in received if n in abbrev]
    assert got == wanted
    # What the bot knows at the end equals the projections at the same point.
    state = _fold(received)
    with source.connect() as conn:
        open_orders = dict(
            conn.execute(sa.text("SELECT id, amount FROM orders WHERE is_open")).all()
        )
        wallets = {
            (t, c): b
            for t, c, b in conn.execute(
                sa.text("SELECT wallet_type, currency, balance FROM wallets")
            )
        }
    assert {i: repr(float(a)) for i, a in open_orders.items()} == {
        i: repr(float(o.amount)) for i, o in state["orders"].items()
    }
    assert {k: float(b) for k, b in wallets.items()} == {
        k: float(w.balance) for k, w in state["wallets"].items()
    }
    source.dispose()


def test_state_at_equals_fold_from_scratch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = sqlite_engine(tmp_path / "s.db")
    log = synthetic_log(9, 400, 37, 50)  # with gaps (disconnect markers) and snapshots
    store_log(engine, "a", log)
    # Stored snapshots every 41 log positions, by the same projector machinery as live.
    monkeypatch.setitem(FOLDS, StateFold.name, lambda: StateFold(every=41))
    AccountProjector(engine, "a", only=StateFold.name).catch_up()
    with engine.connect() as conn:
        snaps = conn.execute(sa.select(sa.func.count()).select_from(state_snapshots)).scalar()
        markers = list(
            conn.execute(
                sa.select(events.c.id, events.c.received_at)
                .where(events.c.kind == "recorder.disconnected")
                .order_by(events.c.id)
            )
        )
    assert snaps and snaps > 5
    rng = random.Random(1)
    moments = [T0 + timedelta(milliseconds=rng.randrange(len(log) + 5)) for _ in range(25)]
    moments += [m.received_at for m in markers[:3]]  # right at a disconnect: stale
    moments += [m.received_at + timedelta(microseconds=500) for m in markers[:3]]  # in the gap
    moments += [T0 - timedelta(seconds=1)]  # before anything
    for at in moments:
        fast = state_at(engine, "a", at)
        slow = state_at(engine, "a", at, use_snapshots=False)
        assert fast == slow, at
    inside_gap = state_at(engine, "a", markers[0].received_at)
    assert inside_gap["stale"] and inside_gap["orders"]
    # At the end, state equals the live-style projection tables.
    rebuild(engine, ["a"])
    end = state_at(engine, "a", T0 + timedelta(days=1))
    with engine.connect() as conn:
        open_ids = set(
            conn.execute(sa.text("SELECT id FROM orders WHERE account = 'a' AND is_open")).scalars()
        )
    assert {o["id"] for o in end["orders"]} == open_ids
    engine.dispose()


def test_state_and_replay_commands(tmp_path: Path) -> None:
    engine = sqlite_engine(tmp_path / "c.db")
    store_log(engine, "a", synthetic_log(3, 60, 0, 0))
    url = f"sqlite:///{tmp_path / 'c.db'}"
    code, out = cli(url, "state", "--json", "--at", (T0 + timedelta(milliseconds=10)).isoformat())
    assert code == 0, out
    doc = orjson.loads(out)
    assert set(doc) >= {"account", "at", "orders", "positions", "wallets"}
    assert doc["account"] == "a" and doc["wallets"]
    assert set(doc["orders"][0]) >= {"id", "symbol", "amount", "is_open", "order_status"}
    code, out = cli(url, "replay", "--to", (T0 + timedelta(milliseconds=9)).isoformat())
    lines = [orjson.loads(line) for line in out.splitlines()]
    assert code == 0 and len(lines) == 10
    assert [x["id"] for x in lines] == sorted(x["id"] for x in lines)
    assert set(lines[0]) == {"id", "account", "received_at", "kind", "frame"}
    with engine.connect() as conn:
        first = conn.execute(sa.select(events.c.frame).order_by(events.c.id).limit(1)).scalar()
    assert lines[0]["frame"] == first  # verbatim
    code, out = cli(url, "state", "--at", "yesterday")
    assert code == 2 and "--at" in out
    engine.dispose()


def test_verify_detects_an_altered_row(db_url: str, engine: sa.Engine) -> None:
    store_log(engine, "a", synthetic_log(4, 40, 13, 0))
    code, out = cli(db_url, "verify")
    assert code == 0, out
    assert "hash chain intact" in out
    assert "malformed" in out and "session-ended" in out
    with engine.connect() as conn:
        victim = conn.execute(
            sa.select(events.c.id).order_by(events.c.id).offset(20).limit(1)
        ).scalar_one()
    with engine.begin() as conn:  # behind the triggers' back
        if engine.dialect.name == "postgresql":
            conn.exec_driver_sql("DROP TRIGGER events_no_update_delete ON events")
        else:
            conn.exec_driver_sql("DROP TRIGGER events_no_update")
        conn.execute(events.update().where(events.c.id == victim).values(frame='[0,"hb"]'))
    code, out = cli(db_url, "verify")
    assert code == 1
    assert f"BROKEN at event {victim}" in out


def test_status_is_a_health_check(tmp_path: Path) -> None:
    engine = sqlite_engine(tmp_path / "st.db")
    store_log(engine, "a", synthetic_log(2, 20, 0, 0))  # frames from 2026-01-01: old
    url = f"sqlite:///{tmp_path / 'st.db'}"
    code, out = cli(url, "status")
    assert code == 1 and "PROBLEM: last frame" in out
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[database]\nurl = "{url}"\n[status]\nmax_frame_age_s = 1e12\n')
    rebuild(engine, ["a"])
    code, out = cli(url, "status", "--config", str(cfg))
    assert code == 0, out
    assert "projector orders: 0 behind" in out
    engine.dispose()
