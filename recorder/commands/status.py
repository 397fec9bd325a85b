"""``bfx-recorder status``: per account, connected, last frame age, events, projector lag;
exit 1 past the ``[status]`` bounds (usable as a health check)."""

from __future__ import annotations

import sys

import click

from recorder.audit.status import account_status
from recorder.commands.common import open_engine, with_config
from recorder.config import Config


@click.command("status")
@with_config
def command(cfg: Config) -> None:
    """Per account: connected, last frame age, events, projector lag (exit 1 past bounds)."""
    engine = open_engine(cfg, read_only=True)
    try:
        states = account_status(engine, cfg.status, [a.name for a in cfg.accounts])
    finally:
        engine.dispose()
    bad = False
    for s in states:
        age = "never" if s.last_frame_age_s is None else f"{s.last_frame_age_s:.1f}s ago"
        click.echo(
            f"{s.account}: {'connected' if s.connected else 'not connected'}"
            f" (last session: {s.last_session_end or 'open'}), last frame {age}, "
            f"{s.events} events"
        )
        for name, lag in sorted(s.projector_lag.items()):
            flag = " (stale)" if name in s.stale else ""
            click.echo(f"  projector {name}: {lag} behind{flag}")
        for name, n in s.findings.items():
            click.echo(f"  projector {name}: {n} row(s) no table can hold (see fold_findings)")
        for p in s.problems:
            bad = True
            click.echo(f"  PROBLEM: {p}")
    if not states:
        click.echo("no account recorded yet")
        sys.exit(1)
    sys.exit(1 if bad else 0)
