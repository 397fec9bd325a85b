"""Replay for repeated backtests (issue: replay): every connection its own run, many at once,
a start inside a session with the exchange's snapshots, bad input, a slow reader, and the
backtest entry point without a socket."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa
import trio
import trio_websocket

from recorder.config import DatabaseConfig
from recorder.projections.state import state_at
from recorder.replay import server as replay_server
from recorder.replay.backtest import replay_events
from recorder.replay.gapfill import gap_frames
from recorder.replay.server import ReplayServer
from recorder.simulator.server import Simulator
from recorder.store import migrate
from recorder.store.engine import create_engine
from recorder.store.schema import events, sessions
from tests.helpers import (
    KEY,
    SECRET,
    _fold,
    chan0,
    drain,
    official_client,
    progressed,
    reauth,
    record_simulation,
    serving_in_a_thread,
    start_recording,
    store_log,
    synthetic_log,
    wait_until,
)


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[sa.Engine, str]]:
    """A simulated account with two reconnects (three sessions), folded."""
    path = tmp_path_factory.mktemp("rec") / "a.db"
    url = f"sqlite:///{path}"
    engine = create_engine(DatabaseConfig(url=url))
    migrate.upgrade(engine)
    trio.run(record_simulation, engine, 611, ["drop", "info-20051"])
    yield engine, url
    engine.dispose()


async def one_run(port: int, key: str, expected: int, query: str = "") -> list[str]:
    """A bare client's whole run: auth, frames, and after each 1012 a reconnect, until it has
    as many frames as the recording; then the next message must be the idle heartbeat (the
    run is over: nothing more, nothing repeated)."""
    got: list[str] = []
    while True:
        async with trio_websocket.open_websocket_url(f"ws://127.0.0.1:{port}/ws/2{query}") as ws:
            await ws.get_message()  # info
            await ws.send_message(orjson.dumps({"event": "auth", "apiKey": key}).decode())
            assert orjson.loads(await ws.get_message())["status"] == "OK"
            try:
                while len(got) < expected:
                    got.append(await ws.get_message())
            except trio_websocket.ConnectionClosed as closed:
                assert closed.reason.code == 1012
                continue
            assert await ws.get_message() == '[0,"hb"]'  # idle after the last session
            return got


@pytest.fixture
def quick_heartbeats(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(replay_server, "HEARTBEAT_EVERY", 0.3)


async def test_three_runs_in_a_row_and_five_at_once(
    recording: tuple[sa.Engine, str], quick_heartbeats: None
) -> None:
    engine, _ = recording
    server = ReplayServer(engine, "main", speed=0)
    assert len(server.sessions) == 3
    wanted = chan0(engine)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(server.serve)
        with trio.fail_after(60):
            runs = [await one_run(port, "bot", len(wanted)) for _ in range(3)]
        for got in runs:
            assert got == wanted
        results: dict[int, list[str]] = {}

        async def client(n: int) -> None:
            results[n] = await one_run(port, f"bot-{n}", len(wanted))

        with trio.fail_after(60):
            async with trio.open_nursery() as clients:
                for n in range(5):
                    clients.start_soon(client, n)
        assert len(results) == 5
        for got in results.values():
            assert got == wanted
        assert server.runs == 8
        nursery.cancel_scope.cancel()


async def test_bad_input_answered_as_the_exchange(
    recording: tuple[sa.Engine, str], quick_heartbeats: None
) -> None:
    engine, _ = recording
    server = ReplayServer(engine, "main", speed=0)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(server.serve)
        url = f"ws://127.0.0.1:{port}/ws/2"
        async with trio_websocket.open_websocket_url(url) as ws:
            await ws.get_message()
            await ws.send_message("not json at all")
            await ws.send_message('{"event":"subscribe","channel":"book","symbol":"tBTCUSD"}')
            refusal = orjson.loads(await ws.get_message())
            assert refusal["event"] == "error" and refusal["code"] == 10300
            await ws.send_message('{"event":"auth","apiKey":"k"}')
            assert orjson.loads(await ws.get_message())["status"] == "OK"
            await ws.send_message('{"event":"auth","apiKey":"k"}')
            await ws.send_message('[0,"on",null,{"type":"EXCHANGE LIMIT","amount":"1"}]')
            seen: list[Any] = []
            with trio.fail_after(10):
                while not (
                    any(isinstance(m, dict) and m.get("status") == "FAILED" for m in seen)
                    and any(isinstance(m, list) and m[1] == "n" for m in seen)
                ):
                    seen.append(orjson.loads(await ws.get_message()))
            dup = next(m for m in seen if isinstance(m, dict))
            assert dup["code"] == 10100
            note = next(m for m in seen if isinstance(m, list) and m[1] == "n")
            assert note[2][1] == "on-req" and note[2][6] == "ERROR"
        assert server.runs == 1  # the second auth started nothing
        # A range chosen in the URL; a bad one refused with HTTP 400.
        with pytest.raises(trio_websocket.HandshakeError):
            async with trio_websocket.open_websocket_url(url + "?speed=fast"):
                pass
        # A range with no frames: auth OK, then heartbeats.
        async with trio_websocket.open_websocket_url(url + "?from=2999-01-01T00:00:00Z") as ws:
            await ws.get_message()
            await ws.send_message('{"event":"auth","apiKey":"k"}')
            assert orjson.loads(await ws.get_message())["status"] == "OK"
            with trio.fail_after(5):
                assert await ws.get_message() == '[0,"hb"]'
        nursery.cancel_scope.cancel()


async def test_a_slow_reader_holds_the_server_back_not_its_memory(tmp_path: Path) -> None:
    """A client that reads nothing: the server stops sending when the socket is full (the
    frames sent stop growing well short of the log), then goes on as the client reads."""
    engine = create_engine(DatabaseConfig(url=f"sqlite:///{tmp_path / 'big.db'}"))
    migrate.upgrade(engine)
    log = synthetic_log(5, 12_000, 10**9, 10**9)
    padded = [(k, f) for k, f in log]
    store_log(engine, "main", padded * 3)
    total = len(padded) * 3
    server = ReplayServer(engine, "main", speed=0)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(server.serve)
        async with trio_websocket.open_websocket_url(
            f"ws://127.0.0.1:{port}/ws/2", message_queue_size=1
        ) as ws:
            await ws.get_message()
            await ws.send_message('{"event":"auth","apiKey":"k"}')
            last = -1
            with trio.fail_after(30):
                while server.frames_sent != last:  # until it stops growing
                    last = server.frames_sent
                    await trio.sleep(0.5)
            assert 0 < server.frames_sent < total / 2, (server.frames_sent, total)
            read = 0
            with trio.fail_after(30):  # the client reads frame by frame: the server follows
                while server.frames_sent <= last:
                    await ws.get_message()
                    read += 1
            assert read < total / 2
        nursery.cancel_scope.cancel()
    engine.dispose()


def _first_session_end(engine: sa.Engine) -> Any:
    """Just after the first session's last frame (a range of that session only)."""
    with engine.connect() as conn:
        first = conn.execute(sa.select(sa.func.min(sessions.c.id))).scalar_one()
        t = conn.execute(
            sa.select(sa.func.max(events.c.received_at)).where(events.c.session_id == first)
        ).scalar_one()
    t = t if t.tzinfo else t.replace(tzinfo=UTC)
    return t + timedelta(microseconds=1)


def _at_mid_session(engine: sa.Engine) -> Any:
    """A time inside the first session, after some updates."""
    with engine.connect() as conn:
        first = conn.execute(sa.select(sa.func.min(sessions.c.id))).scalar_one()
        times = (
            conn.execute(
                sa.select(events.c.received_at)
                .where(events.c.session_id == first, events.c.chan_id == 0)
                .order_by(events.c.id)
            )
            .scalars()
            .all()
        )
    t = times[len(times) // 2]
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def test_from_mid_session_official_client_models_equal_state_at(
    recording: tuple[sa.Engine, str],
) -> None:
    engine, _ = recording
    at = _at_mid_session(engine)
    end = _first_session_end(engine)  # one session: the client never has to reconnect
    server = ReplayServer(engine, "main", start=at, end=end, speed=0, api_keys={KEY: SECRET})
    received: list[tuple[str, Any]] = []
    final = state_at(engine, "main", end)

    def models(folded: dict[str, Any]) -> tuple[dict[Any, Any], dict[Any, Any]]:
        return (
            {i: Decimal(str(o.amount)) for i, o in folded["orders"].items()},
            {k: Decimal(str(w.balance)) for k, w in folded["wallets"].items()},
        )

    def recorded(st: dict[str, Any]) -> tuple[dict[Any, Any], dict[Any, Any]]:
        return (
            {o["id"]: Decimal(str(o["amount"])) for o in st["orders"]},
            {(w["wallet_type"], w["currency"]): Decimal(str(w["balance"])) for w in st["wallets"]},
        )

    wanted = recorded(final)

    async def drive(client: Any) -> None:
        task = asyncio.create_task(client.wss.start())
        for _ in range(600):  # until the later updates brought the models to the end state
            if received and models(_fold(list(received))) == wanted:
                break
            await asyncio.sleep(0.025)
        await client.wss.close()
        await asyncio.wait_for(task, 10)

    with serving_in_a_thread(server) as port:
        asyncio.run(drive(official_client(port, received)))
    assert server.synthetic_sent >= 6
    snapshots_end = max(i for i, (n, _) in enumerate(received) if n.endswith("_snapshot"))
    bot = _fold(received[: snapshots_end + 1])
    state = state_at(engine, "main", at)
    assert models(bot) == recorded(state)
    assert {str(p.symbol) for p in bot["positions"].values()} == {
        p["symbol"] for p in state["positions"]
    }
    # The later updates applied to those models: at the end of the session the bot holds
    # what the record holds as of then.
    assert len(received) > snapshots_end + 1
    assert models(_fold(received)) == wanted


def test_backtest_events_without_a_socket(recording: tuple[sa.Engine, str]) -> None:
    engine, url = recording
    at = _at_mid_session(engine)
    replayed = list(replay_events(url, start=at))
    synthetic = [e for e in replayed if e.synthetic]
    assert [e.kind for e in synthetic][:6] == ["ps", "ws", "os", "fos", "fcs", "fls"]
    state = state_at(engine, "main", at)
    ws = next(e for e in synthetic if e.kind == "ws")
    assert {(w[0], w[1]): Decimal(str(w[2])) for w in ws.record} == {
        (w["wallet_type"], w["currency"]): Decimal(str(w["balance"])) for w in state["wallets"]
    }
    recorded = [e.frame for e in replayed if not e.synthetic and e.kind != "recorder.disconnected"]
    with engine.connect() as conn:
        after = (
            conn.execute(
                sa.select(events.c.frame)
                .where(events.c.chan_id == 0, events.c.received_at >= at)
                .order_by(events.c.id)
            )
            .scalars()
            .all()
        )
    assert recorded == after
    assert sum(1 for e in replayed if e.kind == "recorder.disconnected") == 2


def _block(marker: str) -> str:
    text = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    found = re.search(rf"<!-- {marker} -->\s*```\w+\n(.*?)```", text, re.S)
    assert found, marker
    return found.group(1)


@pytest.mark.slow
def test_readme_backtest_walkthrough_runs(tmp_path: Path) -> None:
    """The README's walkthrough as written (a shorter demo, a free port, a --from inside the
    first session): record, serve from T, run the bot three times: the same digest each time;
    and the socket-free example."""
    url = f"sqlite:///{tmp_path / 'recorder.db'}"
    env = {**os.environ, "BFX_RECORDER_DATABASE_URL": url}
    steps = [line.split() for line in _block("replay-walkthrough").splitlines() if line.strip()]
    demo, serve, bots = steps
    assert demo[:2] == ["bfx-recorder", "demo"] and serve[1] == "serve-replay"
    demo = [*demo[:2], "--seconds", "9", "--rate", "100"]
    made = subprocess.run(
        [sys.executable, "-m", "recorder", *demo[1:]], env=env, cwd=tmp_path, capture_output=True,
        text=True, timeout=120,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr[-2000:]
    engine = create_engine(DatabaseConfig(url=url))
    at = _at_mid_session(engine)
    engine.dispose()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = [a for a in serve if a != "&"]
    args[args.index("--port") + 1] = str(port)
    args[args.index("--from") + 1] = at.isoformat()
    server = subprocess.Popen(
        [sys.executable, "-m", "recorder", *args[1:]], env=env, cwd=tmp_path,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert server.stdout is not None
        assert "replaying" in server.stdout.readline()
        bot = tmp_path / "bot.py"
        bot.write_text(_block("replay-bot").replace("8766", str(port)))
        assert " ".join(bots) == "python bot.py; python bot.py; python bot.py"
        digests = []
        for _ in range(3):
            run = subprocess.run(
                [sys.executable, str(bot)], cwd=tmp_path, capture_output=True, text=True,
                timeout=120,
            )  # fmt: skip
            assert run.returncode == 0, run.stderr[-2000:]
            digests.append(run.stdout.strip().splitlines()[-1])
        assert digests[0] == digests[1] == digests[2]
        assert int(digests[0].split()[0]) > 10
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(20)
    code = _block("backtest-example").replace("sqlite:///recorder.db", url)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "exchange" in run.stdout and "Decimal" not in run.stderr


async def test_the_gaps_rest_learned_fills_replayed_as_frames(tmp_path: Path) -> None:
    """A drop during trading, backfilled from REST: without the option a replay has only the
    socket's fills; with it (``rest=1``), every fill of the record, the gap's as te/tu after
    the reconnect, with the wallet updates the ledger carries."""
    engine = create_engine(DatabaseConfig(url=f"sqlite:///{tmp_path / 'gap.db'}"))
    migrate.upgrade(engine)
    sim = Simulator(
        seed=615, rate=300, api_keys={KEY: SECRET}, connection_limit=None, close_after_20051=0.05
    )
    async with trio.open_nursery() as nursery:
        rest_port = await nursery.start(sim.serve_rest)
        recorder = await start_recording(nursery, sim, engine, rest_port=rest_port)
        await progressed(recorder, 100)
        # The drop's gap holds trading for sure (a reconnect can be quicker than the next
        # fill: seen failing in CI).
        await reauth(sim, "drop", steps_while_out=60)
        await progressed(recorder, 100)
        sim.pause()
        await drain(sim, recorder, engine)
        backfiller = recorder.backfillers["main"]
        await wait_until(lambda: backfiller.completed_count >= 1, "the gap backfilled")
        await drain(sim, recorder, engine)
        recorder.stop()
        await recorder.finished.wait()
        nursery.cancel_scope.cancel()
    with engine.connect() as conn:
        every = set(conn.execute(sa.text("SELECT id FROM trades WHERE account = 'main'")).scalars())
        rest_only = set(
            conn.execute(
                sa.text(
                    "SELECT t.id FROM trades t JOIN events e ON e.id = t.event_id "
                    "WHERE e.kind LIKE 'rest.%'"
                )
            ).scalars()
        )
        first_auth = conn.execute(sa.text("SELECT MIN(authenticated_at) FROM sessions")).scalar()
        before_first = set(
            conn.execute(
                sa.text("SELECT id FROM trades WHERE mts_create < :t"), {"t": first_auth}
            ).scalars()
        )
    assert rest_only - before_first and rest_only < every

    def tu_ids(frames: list[str]) -> set[int]:
        return {
            orjson.loads(f)[2][0] for f in frames if f.startswith('[0,"tu"') or '"tu",' in f[:8]
        }

    server = ReplayServer(engine, "main", speed=0)
    plain = chan0(engine)
    filled = gap_frames(engine, "main", server.sessions)
    extra = sum(len(v) for v in filled.values())
    assert extra >= 2 * len(rest_only - before_first)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(server.serve)
        with trio.fail_after(60):
            without = await one_run(port, "bot-a", len(plain))
            with_rest = await one_run(port, "bot-b", len(plain) + extra, query="?rest=1")
        nursery.cancel_scope.cancel()
    assert tu_ids(without) == every - rest_only
    # Every fill since the recording began (REST also answered fills from before the first
    # auth: the first snapshots already hold their effect, so they are not sent).
    assert tu_ids(with_rest) == every - before_first

    def wus(frames: list[str]) -> int:
        return sum(1 for f in frames if f.startswith('[0,"wu"'))

    assert wus(with_rest) > wus(without)  # the gap's fills moved wallets the ledger shows
    # The same without a socket.
    events_ = list(replay_events(str(engine.url), rest_frames=True))
    assert {e.record[0] for e in events_ if e.kind == "tu"} == every - before_first
    assert {e.record[0] for e in events_ if e.kind == "tu" and e.synthetic} == (
        rest_only - before_first
    )
    engine.dispose()
