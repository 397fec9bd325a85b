"""``bfx-recorder head``: each account's chain head (last event id and hash), to keep outside
the database. ``verify --head ID:HASH`` (or ``--heads FILE``) later proves the log still ends at
or beyond that row, unchanged: a truncated or rewritten tail is caught."""

from __future__ import annotations

import click
import orjson

from recorder.commands.common import account_option, open_engine, pick_account, with_config
from recorder.config import Config
from recorder.store.eventlog import EventLog


@click.command("head")
@account_option
@click.option("--json", "as_json", is_flag=True, help="One JSON array instead of lines.")
@with_config
def command(cfg: Config, account: str | None, as_json: bool) -> None:
    """Each account's last event id and hash (lines `ACCOUNT ID:HASH`, or --json)."""
    engine = open_engine(cfg, read_only=True)
    try:
        log = EventLog(engine)
        known = log.accounts()
        accounts = [pick_account(known, account)] if account else known
        heads = [(acc, *log.head(acc)) for acc in accounts if acc]
    finally:
        engine.dispose()
    if as_json:
        rows = [{"account": a, "id": i, "hash": h} for a, i, h in heads]
        click.echo(orjson.dumps(rows).decode())
        return
    for acc, last_id, head in heads:
        click.echo(f"{acc} {last_id}:{head}")
