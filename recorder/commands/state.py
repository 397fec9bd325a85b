"""``bfx-recorder state``: open orders, active positions and wallets as of a time."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import click
import orjson

from recorder.commands.common import (
    account_option,
    open_engine,
    parse_time,
    pick_account,
    with_config,
)
from recorder.config import Config
from recorder.projections.state import state_at
from recorder.store.eventlog import EventLog


@click.command("state")
@account_option
@click.option("--at", default=None, help="ISO 8601 time (default: now).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of tables.")
@with_config
def command(cfg: Config, account: str | None, at: str | None, as_json: bool) -> None:
    """Open orders, active positions and wallets as of a time, folded from the log."""
    moment = parse_time("--at", at) or datetime.now(UTC)
    engine = open_engine(cfg, read_only=True)
    try:
        log = EventLog(engine)
        acc = pick_account(log.accounts(), account)
        assert acc is not None
        state = state_at(engine, acc, moment)
        first = log.read(acc, 0, 1).events if not state["event_id"] else []
    finally:
        engine.dispose()
    if first:  # nothing folded: say so rather than print empty tables
        assert first[0].received_at is not None
        click.echo(
            f"{acc}: nothing recorded at or before {moment.isoformat()}; the log of {acc} "
            f"starts at {first[0].received_at.isoformat()}",
            err=not as_json,
        )
    if as_json:
        click.echo(orjson.dumps(state, option=orjson.OPT_INDENT_2).decode())
    else:
        _print_state(state)


def _print_state(state: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(
        f"account [bold]{state['account']}[/] as of {state['at']} "
        f"(log position {state['event_id']}{', stale' if state['stale'] else ''})"
    )
    for name, cols in (
        ("orders", ["id", "symbol", "amount", "amount_orig", "price", "order_status"]),
        ("positions", ["position_id", "symbol", "status", "amount", "base_price", "pl"]),
        ("wallets", ["wallet_type", "currency", "balance", "available_balance"]),
    ):
        table = Table(title=f"{name} ({len(state[name])})")
        for c in cols:
            table.add_column(c)
        for row in state[name]:
            table.add_row(*[str(row.get(c)) for c in cols])
        console.print(table)
