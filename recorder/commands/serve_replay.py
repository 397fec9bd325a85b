"""``bfx-recorder serve-replay``: a WebSocket server speaking Bitfinex v2 that replays the
recorded account to a bot under test."""

from __future__ import annotations

import signal

import click
import trio

from recorder import logs
from recorder.commands.common import (
    account_option,
    listening_on,
    open_engine,
    parse_time,
    pick_account,
    time_range_options,
    with_config,
)
from recorder.config import Config, ConfigError
from recorder.replay.server import ReplayServer
from recorder.store.eventlog import EventLog


@click.command("serve-replay")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, required=True, help="TCP port (0 picks a free one).")
@account_option
@time_range_options
@click.option(
    "--speed",
    type=float,
    default=1.0,
    show_default=True,
    help="Divide the recorded spacing by this; 0 sends as fast as possible.",
)
@click.option(
    "--loop",
    is_flag=True,
    help="Start each client's replay again after its last session (soak runs).",
)
@click.option(
    "--rest-frames",
    is_flag=True,
    help="After each recorded reconnect, send the gap's REST-learned fills and order closes "
    "as the frames the exchange would have sent (marked synthetic in the server's log).",
)
@click.option("--api-key", default=None, help="Check clients' auth against this key.")
@click.option(
    "--api-secret",
    default=None,
    envvar="BFX_REPLAY_API_SECRET",
    help="Its secret (or $BFX_REPLAY_API_SECRET).",
)
@with_config
def command(
    cfg: Config,
    host: str,
    port: int,
    account: str | None,
    start: str | None,
    end: str | None,
    speed: float,
    loop: bool,
    rest_frames: bool,
    api_key: str | None,
    api_secret: str | None,
) -> None:
    """A WebSocket server speaking Bitfinex v2 that replays the recorded account: each client
    its own replay of the range (choose per connection with ?from=&to=&speed=&loop= in the
    URL); a client starting inside a session first gets the exchange's snapshots as of then."""
    logs.setup(cfg.logging.format, cfg.logging.level)
    if speed < 0:
        raise ConfigError("--speed", "must not be negative", "use 0 for as fast as possible")
    if bool(api_key) != bool(api_secret):
        raise ConfigError(
            "--api-key",
            "give both --api-key and --api-secret, or neither",
            "set BFX_REPLAY_API_SECRET with --api-key",
        )
    t0, t1 = parse_time("--from", start), parse_time("--to", end)
    engine = open_engine(cfg, read_only=True)
    try:
        acc = pick_account(EventLog(engine).accounts(), account)
        assert acc is not None
        server = ReplayServer(
            engine,
            acc,
            start=t0,
            end=t1,
            speed=speed,
            loop=loop,
            rest_frames=rest_frames,
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

        with listening_on(host, port):
            trio.run(main)
        click.echo(
            f"served {server.frames_sent} frames in {server.runs} replay(s) to "
            f"{server.connections} connection(s)"
        )
    finally:
        engine.dispose()
