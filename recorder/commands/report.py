"""``bfx-recorder report``: the period statement (text, JSON or one self-contained HTML
file); see :mod:`recorder.audit.statement`."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path

import click
import orjson

from recorder.audit.statement import Statement, build
from recorder.audit.statement_render import html, text
from recorder.commands.common import (
    account_option,
    open_engine,
    parse_time,
    pick_account,
    row_progress,
    with_config,
)
from recorder.config import Config, ConfigError
from recorder.store.eventlog import EventLog


def render(st: Statement, fmt: str) -> str:
    if fmt == "json":
        return orjson.dumps(st.as_json(), option=orjson.OPT_INDENT_2).decode() + "\n"
    if fmt == "html":
        return html(st)
    return text(st)


@click.command("report")
@account_option
@click.option("--from", "start", required=True, help="ISO 8601 time (UTC if no zone).")
@click.option("--to", "end", default=None, help="ISO 8601 time (UTC if no zone); default now.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json", "html"]),
    default="text",
    show_default=True,
)
@click.option("--output", default=None, help="Write to this file instead of stdout.")
@with_config
def command(
    cfg: Config, account: str | None, start: str, end: str | None, fmt: str, output: str | None
) -> None:
    """The period statement: per wallet and currency opening balance, entries by category,
    closing balance and the check that they add up; fees, fills and volume; positions; the
    record's own health. Exit 1 when a wallet does not balance."""
    since = parse_time("--from", start)
    until = parse_time("--to", end) or datetime.now(UTC)
    assert since is not None
    if until <= since:
        raise ConfigError("--to", "the period ends before it starts", "give --to after --from")
    engine = open_engine(cfg, read_only=True)
    try:
        chosen = pick_account(EventLog(engine).accounts(), account)
        assert chosen is not None
        with row_progress("reading the record") as tick:
            st = build(engine, chosen, since, until, tick)
    finally:
        engine.dispose()
    body = render(st, fmt)
    if output:
        Path(output).write_text(body, encoding="utf-8")
        click.echo(f"statement of {chosen} written to {output}", err=True)
    else:
        click.echo(body, nl=False)
    sys.exit(0 if st.balanced else 1)
