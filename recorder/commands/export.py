"""``bfx-recorder export``: the record as files: Bitfinex's report CSVs, Koinly's and rotki's
imports, Parquet and CSV (see :mod:`recorder.export.files`)."""

from __future__ import annotations

from pathlib import Path

import click

from recorder.commands.common import (
    EXIT_FAILURE,
    account_option,
    fail,
    open_engine,
    parse_time,
    pick_account,
    row_progress,
    with_config,
)
from recorder.config import Config, ConfigError
from recorder.data.tables import DataError
from recorder.export import bitfinex
from recorder.export.files import (
    FORMATS,
    WHATS,
    ExportRefused,
    Job,
    Range,
    plan,
    write_file,
    write_stdout,
)
from recorder.store.eventlog import EventLog


def targets(jobs: list[Job], rng: Range, output: str | None, force: bool) -> list[Path | None]:
    """Where each job goes (None: stdout)."""
    if output == "-":
        if len(jobs) != 1 or jobs[0].ext != "csv":
            raise ConfigError(
                "--output",
                "only one CSV file can go to stdout",
                "give a folder (or leave --output out) for several files or Parquet",
            )
        return [None]
    folder: Path
    if output is None:
        folder = Path.cwd()
    else:
        given = Path(output)
        if len(jobs) == 1 and not given.is_dir() and not output.endswith(("/", "\\")):
            paths: list[Path | None] = [given]
            _refuse_existing([given], force)
            return paths
        folder = given
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        fail(f"cannot create the folder {folder}: {exc.strerror or exc}", EXIT_FAILURE)
    found = [folder / job.file_name(rng) for job in jobs]
    _refuse_existing(found, force)
    return list(found)


def _refuse_existing(paths: list[Path], force: bool) -> None:
    there = [p for p in paths if p.exists()]
    if there and not force:
        raise ConfigError(
            "--output",
            f"{', '.join(map(str, there))} exists",
            "add --force to replace it, or give another --output",
        )


@click.command("export")
@click.argument("what", type=click.Choice(WHATS))
@click.option("--format", "fmt", type=click.Choice(FORMATS), required=True)
@account_option
@click.option("--from", "start", default=None, help="ISO 8601 time (UTC if no zone).")
@click.option("--to", "end", default=None, help="ISO 8601 time (UTC if no zone).")
@click.option(
    "--output",
    default=None,
    help="A file (one file), a folder (created if missing), or - for stdout (one CSV). "
    "Default: the current folder, files named as Bitfinex names them.",
)
@click.option(
    "--date-format",
    default=bitfinex.DEFAULT_DATE_FORMAT,
    show_default=True,
    help="Bitfinex format's DATE: " + ", ".join(bitfinex.DATE_FORMATS) + ".",
)
@click.option("--milliseconds", is_flag=True, help="Bitfinex format's DATE with .SSS.")
@click.option(
    "--timezone",
    "tz_name",
    default="UTC",
    show_default=True,
    help="Bitfinex format's DATE zone: UTC, an offset (+02:00) or a name (Europe/Zurich).",
)
@click.option("--force", is_flag=True, help="Replace files that exist.")
@with_config
def command(
    cfg: Config,
    what: str,
    fmt: str,
    account: str | None,
    start: str | None,
    end: str | None,
    output: str | None,
    date_format: str,
    milliseconds: bool,
    tz_name: str,
    force: bool,
) -> None:
    """Write WHAT (trades, ledgers, movements, orders, positions, funding-trades, fills,
    wallet-history, frames, or all) as files in a format: bitfinex (Bitfinex's own report
    CSVs), koinly, rotki, parquet or csv. Streams: memory stays flat on any log size."""
    since, until = parse_time("--from", start), parse_time("--to", end)
    if since is not None and until is not None and until <= since:
        raise ConfigError("--to", "the range ends before it starts", "give --to after --from")
    try:
        style = bitfinex.DateStyle(date_format, milliseconds, bitfinex.zone(tz_name))
    except bitfinex.FormatError as exc:
        option = "--timezone" if "zone" in str(exc) or "offset" in str(exc) else "--date-format"
        raise ConfigError(option, str(exc), "see bfx-recorder export --help") from None
    try:
        jobs = plan(what, fmt, style)
    except ExportRefused as exc:
        raise ConfigError("WHAT", str(exc), "see bfx-recorder export --help") from None
    engine = open_engine(cfg, read_only=True)
    try:
        chosen = pick_account(EventLog(engine).accounts(), account)
        assert chosen is not None
        rng = Range(chosen, since, until)
        paths = targets(jobs, rng, output, force)
        with engine.connect() as conn:
            for job, path in zip(jobs, paths, strict=True):
                with row_progress(job.name) as tick:
                    if path is None:
                        count = write_stdout(job, conn, rng, tick)
                        click.echo(f"{count} rows of {job.name} written to stdout", err=True)
                    else:
                        count = write_file(job, conn, rng, path, tick)
                        click.echo(f"{count} rows written to {path}", err=True)
    except DataError as exc:
        fail(f"export stopped: {exc}", EXIT_FAILURE)
    except OSError as exc:
        where = getattr(exc, "filename", None) or "the output"
        fail(f"cannot write {where}: {exc.strerror or exc}", EXIT_FAILURE)
    finally:
        engine.dispose()
