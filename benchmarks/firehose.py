"""A stand-in exchange for the benchmarks, run as its own process (so it does not share the
measured process's GIL): every connection gets ``info``, an ``auth`` OK, then N real account
frames (from the simulator's model) as fast as possible or at ``--rate`` frames/s, then a
heartbeat every few seconds.

Prints the bound port, then ``start <connection> <time.monotonic()>`` when it begins sending
on a connection (CLOCK_MONOTONIC is system-wide, so the measuring process can compare).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import trio
from trio_websocket import ConnectionClosed, WebSocketRequest, serve_websocket

HEARTBEAT_EVERY = 5.0  # seconds, once the frames are sent


def make_frames(n: int, seed: int = 1) -> list[str]:
    from recorder.simulator.model import AccountModel

    model = AccountModel(seed=seed)
    out: list[str] = []
    seq = 0
    while len(out) < n:
        for abbr, payload in model.step():
            seq += 1
            out.append(orjson.dumps([0, abbr, payload, seq, seq]).decode())
    return out[:n]


async def greet(ws: Any) -> None:
    """The exchange's side of the start of a session: ``info``, then ``auth`` OK once the
    client has asked for it."""
    await ws.send_message('{"event":"info","version":2,"platform":{"status":1}}')
    while True:
        msg = orjson.loads(await ws.get_message())
        if msg.get("event") == "auth":
            break
    await ws.send_message('{"event":"auth","status":"OK","chanId":0,"userId":1}')


async def serve(n: int, rate: float) -> None:
    frames = make_frames(n)
    count = 0

    async def handler(request: WebSocketRequest) -> None:
        nonlocal count
        ws = await request.accept()
        count += 1
        me = count
        try:
            await greet(ws)
            print(f"start {me} {time.monotonic()}", flush=True)
            if rate > 0:
                t0 = trio.current_time()
                for i, f in enumerate(frames):
                    await trio.sleep_until(t0 + i / rate)
                    await ws.send_message(f)
            else:
                for f in frames:
                    await ws.send_message(f)
            # The client decides when it has had enough. Meanwhile heartbeats, as the
            # exchange sends them: a silent socket would time out, and the reconnect would
            # get a second burst while the measurement of the first still runs.
            while True:
                await trio.sleep(HEARTBEAT_EVERY)
                await ws.send_message('[0,"hb"]')
        except ConnectionClosed:
            return

    async with trio.open_nursery() as nursery:
        server = await nursery.start(serve_websocket, handler, "127.0.0.1", 0, None)
        print(server.port, flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, required=True)
    ap.add_argument("--rate", type=float, default=0.0)
    args = ap.parse_args()
    trio.run(serve, args.frames, args.rate)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    main()
