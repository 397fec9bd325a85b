"""Fault names and the ``--faults`` schedule syntax.

A schedule is a comma-separated list of ``NAME[:ARG]@T`` (once, T seconds after the simulator
starts) or ``NAME[:ARG]@T/P`` (at T, then every P seconds). Examples::

    drop@30                 close the connection with a close frame at 30 s
    drop-silent@10/60       drop the TCP connection without a close frame at 10 s, 70 s, ...
    info-20051@20           send info 20051, then close with 1012
    maintenance:5@40        20060, 5 s without activity, 20061
    stall:60@50             stop sending anything (heartbeats and pongs too) for 60 s
    malformed@5/5           a frame that is not JSON
    truncated@7             a real frame cut in half
    seq-skip@12             skip one public sequence number
    seq-repeat@14           repeat the previous public sequence number
    burst:2000@15           2000 frames at once
    dirty@20                rows no table can hold (null id, 30-digit id, null currency)
    huge:2000000@25         one frame of 2 MB
    bad-utf8@30             a text frame that is not valid UTF-8
"""

from __future__ import annotations

import re
from dataclasses import dataclass

FAULTS: dict[str, str] = {
    "drop": "close the connection with a WebSocket close frame (code 1001)",
    "drop-silent": "close the TCP connection without a close frame",
    "info-20051": "send info 20051 (server restart), then close with code 1012",
    "maintenance": "send info 20060, pause activity ARG seconds (default 5), send 20061",
    "stall": "send nothing, not even heartbeats or pongs, for ARG seconds (default 120)",
    "malformed": "send a frame that is not valid JSON",
    "truncated": "send a real account frame cut in half",
    "seq-skip": "skip one public sequence number on the next account frame",
    "seq-repeat": "repeat the previous public sequence number on the next account frame",
    "burst": "generate ARG frames (default 1000) at once",
    "dirty": "send rows no table can hold: an order without an id, one with a 30-digit id, "
    "a wallet without a currency",
    "huge": "send one frame of ARG bytes (default 2,000,000)",
    "bad-utf8": "send a text frame that is not valid UTF-8",
}

_ITEM = re.compile(
    r"^(?P<name>[a-z0-9-]+)(?::(?P<arg>\d+(?:\.\d+)?))?@(?P<at>\d+(?:\.\d+)?)(?:/(?P<every>\d+(?:\.\d+)?))?$"
)


class FaultSpecError(ValueError):
    pass


@dataclass(frozen=True)
class ScheduledFault:
    name: str
    arg: float | None
    at: float
    every: float | None = None


def parse_schedule(spec: str) -> list[ScheduledFault]:
    out: list[ScheduledFault] = []
    for raw in filter(None, (part.strip() for part in spec.split(","))):
        m = _ITEM.match(raw)
        if not m:
            raise FaultSpecError(f"bad fault {raw!r}: expected NAME[:ARG]@SECONDS[/EVERY]")
        name = m["name"]
        if name not in FAULTS:
            raise FaultSpecError(f"unknown fault {name!r}: known are {', '.join(FAULTS)}")
        every = float(m["every"]) if m["every"] else None
        if every is not None and every <= 0:
            raise FaultSpecError(f"bad fault {raw!r}: the period must be positive")
        out.append(
            ScheduledFault(name, float(m["arg"]) if m["arg"] else None, float(m["at"]), every)
        )
    return out
