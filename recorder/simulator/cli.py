"""``bfx-recorder simulate``: the simulator as a standalone server."""

from __future__ import annotations

import secrets
import signal
import sys
from pathlib import Path

import click
import trio

from recorder import logs
from recorder.config import Config
from recorder.simulator.faults import FAULTS, FaultSpecError, parse_schedule
from recorder.simulator.server import Simulator


def generated_credentials() -> tuple[str, str]:
    return f"sim-{secrets.token_hex(8)}", secrets.token_hex(24)


def run_simulator(
    cfg: Config,
    *,
    port: int,
    host: str,
    api_key: str | None,
    api_secret: str | None,
    seed: int,
    rate: float,
    faults: str,
    truth_path: str | None,
    heartbeat: float,
    rate_limit: bool,
) -> None:
    logs.setup(cfg.logging.format, cfg.logging.level)
    try:
        schedule = parse_schedule(faults)
    except FaultSpecError as exc:
        click.echo(f"bfx-recorder simulate: --faults: {exc}", err=True)
        click.echo(
            "known faults:\n" + "\n".join(f"  {k}: {v}" for k, v in FAULTS.items()), err=True
        )
        sys.exit(2)
    if bool(api_key) != bool(api_secret):
        click.echo(
            "bfx-recorder simulate: give both --api-key and --api-secret, or neither", err=True
        )
        sys.exit(2)
    if not api_key:
        api_key, api_secret = generated_credentials()
        click.echo(f"generated credentials: api key {api_key} api secret {api_secret}")
    sim = Simulator(
        seed=seed,
        rate=rate,
        api_keys={api_key: api_secret},  # type: ignore[dict-item]
        heartbeat_period=heartbeat,
        connection_limit=(5, 15.0) if rate_limit else None,
        faults=schedule,
    )

    def write_truth() -> None:
        if truth_path:
            Path(truth_path).write_bytes(sim.truth_json())

    async def main() -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGUSR1) as sigs:
            async with trio.open_nursery() as nursery:
                bound = await nursery.start(sim.serve, host, port)
                click.echo(f"simulator listening on ws://{host}:{bound}/ws/2 (seed {seed})")
                async for signum in sigs:
                    if signum == signal.SIGUSR1:
                        write_truth()
                        continue
                    nursery.cancel_scope.cancel()
                    break
        write_truth()
        click.echo(f"simulator stopped: {len(sim.sent_log)} frames sent")

    trio.run(main)
