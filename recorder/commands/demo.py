"""``bfx-recorder demo``: the simulator (WebSocket and REST) on loopback, recorded into the
configured database; every reconnect is backfilled from the simulator's REST history.

Credentials are generated in memory and handed to both sides directly: nothing secret touches
the environment, the command line or the logs.
"""

from __future__ import annotations

import io
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click
import sqlalchemy as sa
import trio
from rich.console import Console
from rich.live import Live
from rich.table import Table

from recorder import config as config_mod
from recorder import logs
from recorder.commands.common import EXIT_USAGE, _sqlite_path, fail, open_engine, with_config
from recorder.config import AccountConfig, Config, ConfigError, Credentials, Secret
from recorder.daemon import Recorder
from recorder.simulator.faults import parse_schedule
from recorder.simulator.server import Simulator, generated_credentials
from recorder.store.database import Database
from recorder.store.eventlog import EventLog
from recorder.store.lease import LeaseHeld, hold_all
from recorder.store.schema import PROJECTION_TABLES
from recorder.store.sessions import end_reasons
from recorder.upstream.backfill import LEDGER_ONLY, Window

ACCOUNT = "demo"


def _progress(recorder: Recorder, sim: Simulator, elapsed: float, seconds: float) -> Table:
    status = recorder.status[ACCOUNT]
    table = Table(title=f"bfx-recorder demo: {elapsed:4.1f}s / {seconds:.0f}s", expand=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_row("frames sent by the simulator", str(len(sim.sent_log)))
    table.add_row("events committed", str(recorder.writer.stats.committed_events))
    table.add_row("sessions", str(status.sessions))
    table.add_row("reconnects", str(max(status.sessions - 1, 0)))
    table.add_row("connected", "yes" if status.connected else "no")
    table.add_row("last end reason", status.last_reason or "-")
    return table


def summary(engine: sa.Engine, account: str) -> dict[str, Any]:
    by_kind = EventLog(engine).count_by_kind(account)
    with engine.connect() as conn:
        counts = {
            name: conn.execute(
                sa.select(sa.func.count()).select_from(t).where(t.c.account == account)
            ).scalar_one()
            for name, t in PROJECTION_TABLES.items()
        }
    return {
        "events": sum(by_kind.values()),
        "by_kind": by_kind,
        "sessions": end_reasons(engine, account),
        "projections": counts,
    }


@click.command("demo")
@click.option("--seconds", type=float, default=20.0, show_default=True, help="How long to record.")
@click.option("--seed", type=int, default=1, show_default=True, help="Simulator seed.")
@click.option("--rate", type=float, default=50.0, show_default=True, help="Frames per second.")
@click.option(
    "--faults",
    default="malformed@4/10,drop@7/20,info-20051@13/20",
    show_default=True,
    help="Simulator fault schedule ('' for none); see `simulate --help`.",
)
@click.option(
    "--append",
    is_flag=True,
    help="Add to a database that already holds a demo recording (default: refuse).",
)
@with_config
def command(cfg: Config, seconds: float, seed: int, rate: float, faults: str, append: bool) -> None:
    """Record a simulated account (no Bitfinex account needed) into the configured database."""
    sys.exit(run_demo(cfg, seconds=seconds, seed=seed, rate=rate, faults=faults, append=append))


def query_hint(url: str) -> str:
    """How to open the database with its own client (psql takes no SQLAlchemy driver)."""
    parsed = sa.make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return f"sqlite3 {parsed.database}"
    plain = parsed.set(drivername="postgresql", query={})
    return f"psql '{plain.render_as_string(hide_password=True)}'"


def run_demo(
    cfg: Config, *, seconds: float, seed: int, rate: float, faults: str, append: bool = False
) -> int:
    log_stream = io.StringIO() if sys.stderr.isatty() else sys.stderr
    logs.setup(cfg.logging.format, cfg.logging.level, stream=log_stream)
    console = Console()
    db = Database(open_engine(cfg, read_only=False))
    held = EventLog(db.engine).count([ACCOUNT])
    if held and not append:
        db.engine.dispose()
        raise ConfigError(
            "--append",
            f"{config_mod.redact_url(cfg.database.url)} already holds a demo recording "
            f"({held} events); a second simulated user would be mixed into it",
            "run the demo in an empty directory, remove that database, or pass --append",
        )
    try:
        leases = hold_all(db.engine, [ACCOUNT])
    except LeaseHeld as exc:
        db.engine.dispose()
        fail(f"{exc}; wait for that demo to end, or use another database", EXIT_USAGE)
    key, secret = generated_credentials()
    sim = Simulator(seed=seed, rate=rate, api_keys={key: secret}, faults=parse_schedule(faults))

    async def main() -> int:
        async with trio.open_nursery() as nursery:
            port = await nursery.start(sim.serve)
            rest_port = await nursery.start(sim.serve_rest)
            account = AccountConfig(
                name=ACCOUNT,
                url=f"ws://127.0.0.1:{port}/ws/2",
                rest_url=f"http://127.0.0.1:{rest_port}/v2",
            )
            creds = Credentials(Secret(key), Secret(secret))
            recorder = Recorder(cfg, [(account, creds)], db, leases=leases)
            console.print(
                f"recording the simulated account [bold]{ACCOUNT}[/] from {account.url} into "
                f"{db.engine.url.render_as_string(hide_password=True)} for {seconds:.0f}s",
                soft_wrap=True,
            )
            await nursery.start(recorder.run)
            await _record_for(console, recorder, sim, seconds, rest=True)
            console.print()
            nursery.cancel_scope.cancel()
        return 0

    began = datetime.now(UTC).replace(microsecond=0)
    try:
        code = trio.run(main)
        result = summary(db.engine, ACCOUNT)
    finally:
        for lease in leases:
            lease.release()
        db.engine.dispose()
    console.print(_recorded_table(result))
    console.print(f"query it: {query_hint(cfg.database.url)}", soft_wrap=True, markup=False)
    written = _write_statement(cfg, began)
    console.print(
        f"statement of this run: {written} (again: bfx-recorder report --from "
        f"{began.isoformat(timespec='seconds')} --format html --output FILE)",
        soft_wrap=True,
        markup=False,
    )
    return code


def _write_statement(cfg: Config, since: datetime) -> Path:
    """The period statement of the run, as HTML next to the database (or here)."""
    from recorder.audit.statement import build
    from recorder.audit.statement_render import html

    path = _sqlite_path(sa.make_url(cfg.database.url))
    target = (path.parent if path is not None else Path.cwd()) / "demo-statement.html"
    engine = open_engine(cfg, read_only=True)
    try:
        st = build(engine, ACCOUNT, since, datetime.now(UTC))
    finally:
        engine.dispose()
    target.write_text(html(st), encoding="utf-8")
    return target.resolve()


async def _close_the_ledger(recorder: Recorder, sim: Simulator) -> None:
    """Before the demo stops: the simulated trading pauses, then one ledger window up to now
    (what the daemon does every ``ledger_every_s`` while connected), so that the statement's
    ledger reaches the end of the run and ends where the socket's last balance does.
    Bounded: the demo must end."""
    backfiller = recorder.backfillers.get(ACCOUNT)
    if backfiller is None:
        return
    sim.pause()
    with trio.move_on_after(5):
        await sim.settled()
    now = datetime.now(UTC)
    backfiller.request(Window(now - timedelta(days=1), now, "ledger", endpoints=LEDGER_ONLY))
    with trio.move_on_after(10):
        await trio.sleep(0)
        await backfiller.idle.wait()


async def _record_for(
    console: Console, recorder: Recorder, sim: Simulator, seconds: float, *, rest: bool = False
) -> None:
    """Let the recorder run ``seconds``, showing its progress (redrawn on a terminal, one
    final table when piped), then stop it."""
    start = trio.current_time()
    if console.is_terminal:
        with Live(console=console, refresh_per_second=4, transient=False) as live:
            while (elapsed := trio.current_time() - start) < seconds:
                live.update(_progress(recorder, sim, elapsed, seconds))
                await trio.sleep(0.25)
            if rest:
                await _close_the_ledger(recorder, sim)
            recorder.stop()
            await recorder.finished.wait()
            live.update(_progress(recorder, sim, seconds, seconds))
    else:  # piped: no live redraws, one final table
        await trio.sleep(seconds)
        if rest:
            await _close_the_ledger(recorder, sim)
        recorder.stop()
        await recorder.finished.wait()
        console.print(_progress(recorder, sim, seconds, seconds))


def _recorded_table(result: dict[str, Any]) -> Table:
    """The closing summary: events by kind, session ends, rows per projection."""
    table = Table(title="recorded")
    table.add_column("what")
    table.add_column("count", justify="right")
    table.add_row("events (frames and markers)", str(result["events"]))
    for kind, n in sorted(result["by_kind"].items()):
        table.add_row(f"  {kind}", str(n))
    for reason, n in sorted(result["sessions"].items(), key=lambda kv: str(kv[0])):
        table.add_row(f"sessions ended: {reason}", str(n))
    for name, n in result["projections"].items():
        table.add_row(f"rows in {name}", str(n))
    return table
