"""``bfx-recorder replay``: the recorded frames as JSON lines on stdout, in log order."""

from __future__ import annotations

import sys

import click
import orjson
from rich.progress import Progress

from recorder.commands.common import (
    account_option,
    open_engine,
    parse_time,
    pick_account,
    time_range_options,
    with_config,
)
from recorder.config import Config
from recorder.replay.stream import as_json, iter_frames
from recorder.store.eventlog import EventLog, Within


@click.command("replay")
@account_option
@time_range_options
@with_config
def command(cfg: Config, account: str | None, start: str | None, end: str | None) -> None:
    """The recorded frames as JSON lines (id, account, received_at, kind, frame), in log order."""
    t0, t1 = parse_time("--from", start), parse_time("--to", end)
    engine = open_engine(cfg, read_only=True)
    try:
        log = EventLog(engine)
        acc = pick_account(log.accounts(), account, required=False) if account else None
        total = log.count(None if acc is None else [acc], within=Within(start=t0, end=t1))
        out = sys.stdout.buffer
        with Progress(disable=not sys.stderr.isatty(), transient=True) as progress:
            task = progress.add_task("replaying", total=total)
            for n, rec in enumerate(iter_frames(engine, acc, t0, t1), start=1):
                out.write(orjson.dumps(as_json(rec)) + b"\n")
                if n % 5000 == 0:
                    progress.update(task, completed=n)
        out.flush()
    finally:
        engine.dispose()
