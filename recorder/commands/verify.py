"""``bfx-recorder verify``: recompute the hash chain and list every gap; exit 1 if broken."""

from __future__ import annotations

import sys

import click

from recorder.commands.common import account_option, open_engine, pick_account, with_config
from recorder.config import Config
from recorder.replay.verify import verify
from recorder.store.eventlog import EventLog


@click.command("verify")
@account_option
@with_config
def command(cfg: Config, account: str | None) -> None:
    """Check the hash chain and list every gap; exit 1 if the chain is broken."""
    engine = open_engine(cfg, read_only=True)
    try:
        if account:
            pick_account(EventLog(engine).accounts(), account)
        report = verify(engine, account)
    finally:
        engine.dispose()
    for acc, n in sorted(report.checked.items()):
        if acc in report.broken:
            click.echo(
                f"{acc}: hash chain BROKEN at event {report.broken[acc]} "
                f"({n} events before it verified)"
            )
        else:
            click.echo(f"{acc}: hash chain intact ({n} events)")
    for f in report.findings:
        at = f.at.isoformat() if f.at else "-"
        where = f" event {f.event_id}" if f.event_id else ""
        click.echo(f"  {at} {f.account} {f.what}{where}: {f.detail}")
    click.echo(f"{len(report.findings)} gap(s) listed")
    sys.exit(0 if report.ok else 1)
