"""The replay commands: replay, state, serve-replay, verify, status."""

from __future__ import annotations

import signal
import sys
from datetime import UTC, datetime
from typing import Any

import click
import orjson
import sqlalchemy as sa
import trio
from rich.progress import Progress

from recorder import logs
from recorder.config import Config, ConfigError
from recorder.projections.state import state_at
from recorder.replay.server import ReplayServer
from recorder.replay.status import account_status
from recorder.replay.stream import as_json, iter_frames
from recorder.replay.verify import verify
from recorder.runner import prepare_database
from recorder.store.eventlog import EventLog


def parse_time(option: str, value: str | None) -> datetime | None:
    """ISO 8601; a time without a zone is UTC."""
    if value is None:
        return None
    try:
        t = datetime.fromisoformat(value)
    except ValueError:
        raise ConfigError(
            option, f"{value!r} is not an ISO 8601 time", "write e.g. 2026-11-27T21:00:00Z"
        ) from None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def pick_account(engine: sa.Engine, account: str | None) -> str:
    known = EventLog(engine).accounts()
    if account:
        if account not in known:
            raise ConfigError(
                "--account",
                f"no events for account {account!r}",
                f"use one of {known}" if known else "record something first",
            )
        return account
    if len(known) == 1:
        return known[0]
    raise ConfigError(
        "--account",
        f"the log has {len(known)} accounts",
        f"choose one with --account ({', '.join(known) or 'none recorded'})",
    )


def run_replay(cfg: Config, account: str | None, start: str | None, end: str | None) -> int:
    db = prepare_database(cfg)
    try:
        t0, t1 = parse_time("--from", start), parse_time("--to", end)
        total = EventLog(db.engine).count(None if account is None else [account], start=t0, end=t1)
        out = sys.stdout.buffer
        with Progress(disable=not sys.stderr.isatty(), transient=True) as progress:
            task = progress.add_task("replaying", total=total)
            for n, rec in enumerate(iter_frames(db.engine, account, t0, t1), start=1):
                out.write(orjson.dumps(as_json(rec)) + b"\n")
                if n % 5000 == 0:
                    progress.update(task, completed=n)
        out.flush()
        return 0
    finally:
        db.engine.dispose()


def run_state(cfg: Config, account: str | None, at: str | None, as_json: bool) -> int:
    db = prepare_database(cfg)
    try:
        acc = pick_account(db.engine, account)
        moment = parse_time("--at", at) or datetime.now(UTC)
        with Progress(disable=not sys.stderr.isatty(), transient=True) as progress:
            progress.add_task("folding the log", total=None)
            state = state_at(db.engine, acc, moment)
        if as_json:
            click.echo(orjson.dumps(state, option=orjson.OPT_INDENT_2).decode())
            return 0
        _print_state(state)
        return 0
    finally:
        db.engine.dispose()


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


def run_serve_replay(
    cfg: Config,
    host: str,
    port: int,
    account: str | None,
    start: str | None,
    end: str | None,
    speed: float,
    api_key: str | None,
    api_secret: str | None,
) -> int:
    logs.setup(cfg.logging.format, cfg.logging.level)
    if speed < 0:
        raise ConfigError("--speed", "must not be negative", "use 0 for as fast as possible")
    if bool(api_key) != bool(api_secret):
        raise ConfigError(
            "--api-key",
            "give both --api-key and --api-secret, or neither",
            "set BFX_REPLAY_API_SECRET with --api-key",
        )
    db = prepare_database(cfg)
    acc = pick_account(db.engine, account)
    server = ReplayServer(
        db.engine,
        acc,
        start=parse_time("--from", start),
        end=parse_time("--to", end),
        speed=speed,
        api_keys={api_key: api_secret} if api_key and api_secret else None,
    )

    async def main() -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:
                bound = await nursery.start(server.serve, host, port)
                click.echo(
                    f"replaying {acc} ({len(server.sessions)} recorded sessions) on "
                    f"ws://{host}:{bound}/ws/2 at speed {speed:g}"
                )
                async for _ in signals:
                    nursery.cancel_scope.cancel()
                    break

    try:
        trio.run(main)
        click.echo(f"served {server.frames_sent} frames to {server.connections} connection(s)")
        return 0
    finally:
        db.engine.dispose()


def run_verify(cfg: Config, account: str | None) -> int:
    db = prepare_database(cfg)
    try:
        report = verify(db.engine, account)
    finally:
        db.engine.dispose()
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
    return 0 if report.ok else 1


def run_status(cfg: Config) -> int:
    db = prepare_database(cfg)
    try:
        states = account_status(db.engine, cfg.status, [a.name for a in cfg.accounts])
    finally:
        db.engine.dispose()
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
        for p in s.problems:
            bad = True
            click.echo(f"  PROBLEM: {p}")
    if not states:
        click.echo("no account recorded yet")
        return 1
    return 1 if bad else 0
