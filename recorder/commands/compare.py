"""``bfx-recorder compare``: a CSV exported from Bitfinex's report site against the record
(see :mod:`recorder.export.compare`)."""

from __future__ import annotations

import sys
from pathlib import Path

import click
import orjson

from recorder.commands.common import account_option, open_engine, pick_account, with_config
from recorder.config import Config, ConfigError
from recorder.export import bitfinex
from recorder.export.compare import CompareError, Comparison, compare
from recorder.store.eventlog import EventLog

SHOWN = 50  # rows listed per kind of difference without --details


def text(c: Comparison, details: bool) -> str:
    lines = [
        f"{c.kind}: {c.file_rows} row(s) in the file, {c.record_rows} in the record between "
        f"{c.start.isoformat() if c.start else '-'} and {c.end.isoformat() if c.end else '-'} "
        f"(dates read as {c.date_format}{' with milliseconds' if c.milliseconds else ''})"
    ]
    lines += [f"note: {n}" for n in c.notes]

    def listed(title: str, items: list[str]) -> None:
        if not items:
            return
        lines.append(f"{title}: {len(items)}")
        for item in items if details else items[:SHOWN]:
            lines.append(f"  {item}")
        if not details and len(items) > SHOWN:
            lines.append(f"  ... {len(items) - SHOWN} more (--details lists all)")

    listed("only in the file", [f"#{k}" for k in c.only_in_file])
    listed("only in the record", [f"#{k}" for k in c.only_in_record])
    listed(
        "differ",
        [f"#{d.id} {d.field}: file {d.file!r}, record {d.record!r}" for d in c.differ],
    )
    lines.append("same" if c.same else "DIFFERENT")
    return "\n".join(lines) + "\n"


@click.command("compare")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@account_option
@click.option(
    "--date-format",
    default=None,
    help="The file's date format when its dates read in several: "
    + ", ".join(bitfinex.DATE_FORMATS)
    + ".",
)
@click.option(
    "--timezone", "tz_name", default="UTC", show_default=True, help="The file's time zone."
)
@click.option("--details", is_flag=True, help="List every difference.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@with_config
def command(
    cfg: Config,
    file: Path,
    account: str | None,
    date_format: str | None,
    tz_name: str,
    details: bool,
    as_json: bool,
) -> None:
    """Compare FILE, a trades or ledgers CSV exported from Bitfinex's report site, with the
    record: rows only in the file, only in the record, and rows that differ (which fields,
    both values). Exit 1 on any difference."""
    if date_format is not None and date_format not in bitfinex.DATE_FORMATS:
        raise ConfigError(
            "--date-format",
            f"{date_format!r} is not one of Bitfinex's date formats",
            "use one of " + ", ".join(bitfinex.DATE_FORMATS),
        )
    try:
        tz = bitfinex.zone(tz_name)
    except bitfinex.FormatError as exc:
        raise ConfigError("--timezone", str(exc), "e.g. --timezone +02:00") from None
    if not file.is_file():
        raise ConfigError("FILE", f"{file} is not a file", "give the CSV exported from Bitfinex")
    engine = open_engine(cfg, read_only=True)
    try:
        chosen = pick_account(EventLog(engine).accounts(), account)
        assert chosen is not None
        try:
            result = compare(engine, chosen, file, tz=tz, date_format=date_format)
        except CompareError as exc:
            raise ConfigError("FILE", str(exc), "export trades or ledgers from Bitfinex") from None
    finally:
        engine.dispose()
    if as_json:
        click.echo(orjson.dumps(result.as_json(), option=orjson.OPT_INDENT_2).decode())
    else:
        click.echo(text(result, details), nl=False)
    sys.exit(0 if result.same else 1)
