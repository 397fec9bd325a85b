from __future__ import annotations

import inspect
import itertools
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
import trio
from trio_websocket import ConnectionClosed, open_websocket_url

from recorder.protocol import NonceSource, auth_message, classify, conf_message, layouts
from recorder.simulator.faults import FaultSpecError, parse_schedule
from recorder.simulator.model import AccountModel
from recorder.simulator.server import Simulator

KEY, SECRET = "k", "s"


class Client:
    """A minimal recording client: everything received, in order."""

    def __init__(self, port: int) -> None:
        self.url = f"ws://127.0.0.1:{port}/ws/2"
        self.received: list[str] = []
        self.current: list[str] = []  # the frames of the session under way
        self.nonces = NonceSource()

    async def session(
        self,
        *,
        seq: bool = True,
        stop: Callable[[list[str]], bool] | None = None,
        until: float = 10.0,
        key: str = KEY,
        secret: str = SECRET,
    ) -> tuple[list[str], Any]:
        """Connect, conf, auth; collect until ``stop(frames)`` holds (looked at as frames
        arrive, and every 10 ms) or the server closes. ``until`` bounds the wait: past it
        with ``stop`` unmet the test fails; without ``stop`` it is how long to collect."""
        got: list[str] = []
        self.current = got
        close = None
        try:
            async with open_websocket_url(self.url) as ws:
                if seq:
                    await ws.send_message(conf_message())
                await ws.send_message(auth_message(key, secret, self.nonces.next()))
                with trio.move_on_after(until) as window:
                    while not (stop and stop(got)):
                        with trio.move_on_after(0.01):
                            got.append(await ws.get_message())
                if stop is not None and window.cancelled_caught:
                    raise AssertionError(f"not seen within {until} s; got {len(got)} frames")
        except ConnectionClosed as exc:
            close = exc.reason
        self.received.extend(got)
        return got, close


def answered(got: list[str]) -> bool:
    """The auth request has its answer."""
    return any(t.startswith('{"event":"auth"') for t in got)


def all_sent(sim: Simulator, conn_id: int) -> Callable[[list[str]], bool]:
    """Everything the simulator has sent on connection ``conn_id`` so far has arrived."""
    return lambda got: bool(got) and len(got) == len(sim.frames_for(conn_id))


def snapshot_state(frames: list[str]) -> dict[str, Any]:
    """The account as the snapshots after the last auth describe it."""
    out: dict[str, Any] = {}
    for text in frames:
        f = classify(text)
        if f.kind in ("os", "ps", "ws"):
            out[f.kind] = f.payload
    return out


def truth_arrays(sim: Simulator) -> dict[str, Any]:
    t = sim.truth()
    return {
        "os": [layouts.ORDER.array(o) for o in t["orders"]],
        "ps": [layouts.POSITION.array(p) for p in t["positions"]],
        "ws": [layouts.WALLET.array(w) for w in t["wallets"]],
    }


async def test_auth_failures_use_real_codes() -> None:
    sim = Simulator(seed=1, rate=0, api_keys={KEY: SECRET}, connection_limit=None)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(sim.serve)
        client = Client(port)
        frames, _ = await client.session(key="nope", stop=answered)
        assert orjson.loads(frames[-1]) == {
            "event": "auth",
            "status": "FAILED",
            "chanId": 0,
            "code": 10100,
            "msg": "apikey: invalid",
        }
        frames, _ = await client.session(secret="wrong", stop=answered)
        assert orjson.loads(frames[-1])["code"] == 10100
        assert orjson.loads(frames[-1])["msg"] == "apikey: digest invalid"
        frames, _ = await client.session(stop=answered)
        assert orjson.loads(frames[2])["status"] == "OK"
        client.nonces = NonceSource(clock=lambda: 1.0)  # a nonce below the last one
        frames, _ = await client.session(stop=answered)
        last = orjson.loads(frames[-1])
        assert (last["status"], last["code"], last["msg"]) == ("FAILED", 10114, "nonce: small")
        nursery.cancel_scope.cancel()


async def test_sequence_layout_and_heartbeats() -> None:
    sim = Simulator(seed=2, rate=0, api_keys={KEY: SECRET}, heartbeat_period=0.2)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(sim.serve)
        client = Client(port)
        advanced = trio.Event()

        async def act() -> None:
            await sim.auth_events.wait()
            await sim.advance(5)
            advanced.set()

        def done(got: list[str]) -> bool:
            beats = sum(1 for t in got if classify(t).kind == "hb")
            return advanced.is_set() and beats >= 2 and all_sent(sim, 1)(got)

        nursery.start_soon(act)
        frames, _ = await client.session(stop=done)
        account = [classify(t) for t in frames if classify(t).chan_id == 0]
        seqs = [f.seq for f in account]
        assert seqs == list(range(1, len(account) + 1))  # public seq on every frame, +1 each
        hbs = [f for f in account if f.kind == "hb"]
        assert hbs and all(f.auth_seq is None for f in hbs)
        data = [f for f in account if f.kind != "hb"]
        auth = [f.auth_seq for f in data]
        for prev, cur, f in zip(auth, auth[1:], data[1:], strict=False):
            assert cur == (prev if f.kind == "n" else prev + 1)
        nursery.cancel_scope.cancel()


def test_every_kind_within_first_seconds_with_defaults() -> None:
    """At the simulator's default rate, every account message kind is sent within the first
    ten seconds (its fixed tour), counted in frames the way its activity loop paces them."""
    rate = inspect.signature(Simulator).parameters["rate"].default
    model = AccountModel(seed=3)
    kinds = {abbr for abbr, _ in model.snapshots()}
    seconds = 0.0
    wanted = {
        "os",
        "on",
        "ou",
        "oc",
        "te",
        "tu",
        "ps",
        "pn",
        "pu",
        "pc",
        "ws",
        "wu",
        "bu",
        "miu",
        "fiu",
        "fos",
        "fon",
        "fou",
        "foc",
        "fcs",
        "fcn",
        "fcu",
        "fcc",
        "fls",
        "fln",
        "flu",
        "flc",
        "n",
    }
    while not wanted <= kinds:
        messages = model.step()
        seconds += max(len(messages), 1) / rate
        kinds |= {abbr for abbr, _ in messages}
        assert seconds <= 10.0, wanted - kinds


@pytest.mark.parametrize(
    "fault",
    [
        "drop",
        "drop-silent",
        "info-20051",
        "maintenance",
        "stall",
        "malformed",
        "truncated",
        "seq-skip",
        "seq-repeat",
        "burst",
    ],
)
async def test_faults_then_snapshots_equal_truth(fault: str) -> None:
    sim = Simulator(
        seed=4, rate=400, api_keys={KEY: SECRET}, connection_limit=None, close_after_20051=0.1
    )
    async with trio.open_nursery() as nursery:
        port = await nursery.start(sim.serve)
        client = Client(port)
        paused = trio.Event()

        async def trigger() -> None:
            with trio.fail_after(10):
                while len(client.current) < 30:  # traffic before the fault
                    await trio.sleep(0.01)
            before = len(client.current)
            arg = {"maintenance": 0.3, "stall": 0.3, "burst": 300}.get(fault)
            await sim.inject(fault, arg)
            with trio.fail_after(10):  # and after it, unless the connection is gone
                while len(client.current) < before + 30 and sim.connections:
                    await trio.sleep(0.01)
            sim.pause()
            await sim.settled()  # a step already sending finishes first
            paused.set()

        nursery.start_soon(trigger)
        # Until the pause and every frame sent before it arrived (or the server closed).
        first, close = await client.session(
            stop=lambda got: paused.is_set() and all_sent(sim, 1)(got)
        )
        if fault in ("drop", "info-20051"):
            assert close is not None and close.code == (1001 if fault == "drop" else 1012)
        if fault == "drop-silent":
            assert close is not None and close.code == 1006
        if fault == "info-20051":
            assert any('"code":20051' in t for t in first)
        if fault == "maintenance":
            codes = [orjson.loads(t).get("code") for t in first if t.startswith("{")]
            assert codes.index(20060) < codes.index(20061)
        if fault in ("malformed", "truncated"):
            assert any(classify(t).kind == "malformed" for t in first)
        if fault in ("seq-skip", "seq-repeat"):
            seqs = [classify(t).seq for t in first if classify(t).seq is not None]
            steps = {b - a for a, b in itertools.pairwise(seqs)}
            assert (2 if fault == "seq-skip" else 0) in steps
        # The sent-log holds exactly what went on the wire for that connection.
        assert sim.frames_for(1) == first
        # Next connection: snapshots equal the simulator's true state at that moment.
        await paused.wait()
        snapshot_kinds = {abbr for abbr, _ in sim.model.snapshots()}
        second, _ = await client.session(
            stop=lambda got: snapshot_kinds <= {classify(t).kind for t in got}
        )
        assert sim.frames_for(2) == second
        assert snapshot_state(second) == orjson.loads(orjson.dumps(truth_arrays(sim)))
        nursery.cancel_scope.cancel()


async def test_rate_limit_answers_429() -> None:
    sim = Simulator(seed=5, rate=0, api_keys={KEY: SECRET}, connection_limit=(2, 15.0))
    async with trio.open_nursery() as nursery:
        port = await nursery.start(sim.serve)
        client = Client(port)
        await client.session(stop=answered)
        await client.session(stop=answered)
        from trio_websocket import HandshakeError

        with pytest.raises(HandshakeError) as info:
            await client.session(stop=answered)
        assert "429" in repr(info.value)
        assert sim.rejected_connections == 1
        nursery.cancel_scope.cancel()


async def test_same_seed_same_frames() -> None:
    async def transcript() -> list[str]:
        sim = Simulator(seed=11, rate=0, api_keys={KEY: SECRET}, wall_clock=lambda: 1.7e9)
        async with trio.open_nursery() as nursery:
            port = await nursery.start(sim.serve)
            client = Client(port)
            client.nonces = NonceSource(clock=lambda: 1.0)
            advanced = trio.Event()

            async def act() -> None:
                await sim.auth_events.wait()
                await sim.advance(40)
                advanced.set()

            nursery.start_soon(act)
            frames, _ = await client.session(
                stop=lambda got: advanced.is_set() and all_sent(sim, 1)(got)
            )
            nursery.cancel_scope.cancel()
        return frames

    a, b = await transcript(), await transcript()
    assert len(a) > 40
    assert a == b
    model_a, model_b = AccountModel(seed=11), AccountModel(seed=11)
    assert [model_a.step() for _ in range(200)] == [model_b.step() for _ in range(200)]
    assert [AccountModel(seed=12).step() for _ in range(20)] != [
        AccountModel(seed=11).step() for _ in range(20)
    ]


def test_fault_schedule_parsing() -> None:
    sched = parse_schedule("drop@30, stall:60@90/300,burst:500@1.5")
    assert [(f.name, f.arg, f.at, f.every) for f in sched] == [
        ("drop", None, 30.0, None),
        ("stall", 60.0, 90.0, 300.0),
        ("burst", 500.0, 1.5, None),
    ]
    for bad in ("explode@3", "drop", "drop@x", "drop@1/0"):
        with pytest.raises(FaultSpecError):
            parse_schedule(bad)


@pytest.mark.slow
def test_simulate_command(tmp_path: Path) -> None:
    """From the command line: faults on a schedule, truth on SIGUSR1 and on exit."""
    truth = tmp_path / "truth.json"
    secret = "simulate-command-secret-0123456789abcdef"
    env = {**os.environ, "BFX_SIM_API_SECRET": secret}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "recorder",
            "simulate",
            "--port",
            "0",
            "--api-key",
            KEY,
            "--truth",
            str(truth),
            "--rate",
            "200",
            "--faults",
            "malformed@0.2/0.2,drop@1.5",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "listening on ws://127.0.0.1:" in line, line
        port = int(line.split(":")[2].split("/")[0])

        async def connect() -> tuple[list[str], Any]:
            return await Client(port).session(until=3.0, secret=secret)

        frames, close = trio.run(connect)
        assert any(classify(t).kind == "malformed" for t in frames)
        assert close is not None and close.code == 1001
        proc.send_signal(signal.SIGUSR1)
        for _ in range(50):
            if truth.exists():
                break
            trio.run(trio.sleep, 0.1)
        assert set(orjson.loads(truth.read_bytes())) >= {"orders", "positions", "wallets"}
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
        assert proc.returncode == 0, err
        assert "simulator stopped" in out
        assert secret not in out + err
    finally:
        if proc.poll() is None:
            proc.kill()


def test_an_accounts_open_funding_stays_bounded_and_its_frames_say_which() -> None:
    """A long run's account holds at most ``MAX_OPEN_FUNDING`` credits and loans (the oldest
    ends, with its ``fcc``/``flc`` and interest, before another opens; before, credits opened
    five times as often as they closed and piled up by the ten thousand), and the frames
    alone tell which are open: what ``*n`` opened and ``*c`` did not close is the book."""
    from recorder.simulator.model import MAX_OPEN_FUNDING

    model = AccountModel(seed=8)
    open_by_frames: dict[str, set[int]] = {"fc": set(), "fl": set()}
    most = {"fc": 0, "fl": 0}
    closed = 0
    for _ in range(30_000):
        for abbr, payload in model.step():
            prefix, action = abbr[:2], abbr[2:]
            if prefix not in open_by_frames or action not in ("n", "c"):
                continue
            if action == "n":
                open_by_frames[prefix].add(payload[0])
            else:
                open_by_frames[prefix].remove(payload[0])
                closed += 1
            most[prefix] = max(most[prefix], len(open_by_frames[prefix]))
    assert most["fc"] == MAX_OPEN_FUNDING and most["fl"] <= MAX_OPEN_FUNDING, most
    assert closed > 1000
    assert open_by_frames["fc"] == set(model.funding_credits)
    assert open_by_frames["fl"] == set(model.funding_loans)
