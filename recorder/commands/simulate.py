"""``bfx-recorder simulate``: the simulator as a standalone server: the account's WebSocket
and its REST history (for the gap backfill), as the demo runs it."""

from __future__ import annotations

import signal
from pathlib import Path

import click
import trio

from recorder import logs
from recorder.commands.common import listening_on, with_config
from recorder.config import Config, ConfigError
from recorder.simulator.faults import FAULTS, FaultSpecError, parse_schedule
from recorder.simulator.server import Simulator, generated_credentials


@click.command("simulate")
@click.option("--port", type=int, required=True, help="TCP port (0 picks a free one).")
@click.option(
    "--rest-port",
    type=int,
    default=None,
    help="TCP port of the simulated REST API (the gap backfill's; 0 picks a free one; "
    "default: the WebSocket port + 1, or a free one with --port 0).",
)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--api-key", default=None, help="API key the simulator accepts.")
@click.option(
    "--api-secret",
    default=None,
    envvar="BFX_SIM_API_SECRET",
    help="Its secret (or $BFX_SIM_API_SECRET, which keeps it out of the process list).",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--rate", type=float, default=20.0, show_default=True, help="Frames per second.")
@click.option("--faults", default="", help="Fault schedule, e.g. 'drop@30,stall:60@90/300'.")
@click.option(
    "--truth",
    "truth_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write the true account state here on exit and on SIGUSR1.",
)
@click.option("--heartbeat", type=float, default=15.0, show_default=True)
@click.option("--no-rate-limit", is_flag=True, help="Accept more than 5 connections per 15 s.")
@with_config
def command(
    cfg: Config,
    port: int,
    rest_port: int | None,
    host: str,
    api_key: str | None,
    api_secret: str | None,
    seed: int,
    rate: float,
    faults: str,
    truth_path: str | None,
    heartbeat: float,
    no_rate_limit: bool,
) -> None:
    """Run the simulated Bitfinex exchange until SIGINT/SIGTERM."""
    logs.setup(cfg.logging.format, cfg.logging.level)
    try:
        schedule = parse_schedule(faults)
    except FaultSpecError as exc:
        known = "; ".join(f"{k}: {v}" for k, v in FAULTS.items())
        raise ConfigError(
            "--faults", str(exc), f"use NAME[:ARG]@T[/P] with one of: {known}"
        ) from None
    if bool(api_key) != bool(api_secret):
        raise ConfigError(
            "--api-key",
            "give both --api-key and --api-secret, or neither",
            "set BFX_SIM_API_SECRET with --api-key",
        )
    if not api_key:
        api_key, api_secret = generated_credentials()
        click.echo(f"generated credentials: api key {api_key} api secret {api_secret}")
    sim = Simulator(
        seed=seed,
        rate=rate,
        api_keys={api_key: api_secret},  # type: ignore[dict-item]
        heartbeat_period=heartbeat,
        connection_limit=None if no_rate_limit else (5, 15.0),
        faults=schedule,
    )

    with listening_on(host, port):
        trio.run(serve, sim, host, port, rest_port, seed, truth_path)


def write_truth(sim: Simulator, truth_path: str | None) -> None:
    """Whole or not at all: a reader never sees half a file."""
    if truth_path:
        target = Path(truth_path)
        partial = target.with_name(f".{target.name}.partial")
        partial.write_bytes(sim.truth_json())
        partial.replace(target)


async def serve(
    sim: Simulator,
    host: str,
    port: int,
    rest_port: int | None,
    seed: int,
    truth_path: str | None,
) -> None:
    """Serve the WebSocket and the REST API until SIGINT/SIGTERM; the truth on SIGUSR1 and
    at the end."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGUSR1) as sigs:
        async with trio.open_nursery() as nursery:
            bound = await nursery.start(sim.serve, host, port)
            # Beside the WebSocket port by default (any free one with --port 0).
            wanted = (bound + 1 if port else 0) if rest_port is None else rest_port
            rest = await nursery.start(sim.serve_rest, host, wanted)
            click.echo(f"simulator listening on ws://{host}:{bound}/ws/2 (seed {seed})")
            click.echo(f"simulated REST API on http://{host}:{rest}/v2 (set it as rest_url)")
            async for signum in sigs:
                if signum == signal.SIGUSR1:
                    write_truth(sim, truth_path)
                    continue
                nursery.cancel_scope.cancel()
                break
    write_truth(sim, truth_path)
    click.echo(f"simulator stopped: {len(sim.sent_log)} frames sent")
