"""The ``bfx-recorder`` command line: a click group whose commands live one per module in
:mod:`recorder.commands` and are imported only when they run (``state`` need not import
trio, alembic or the simulator to answer)."""

from __future__ import annotations

import atexit
import gc
import importlib

import click

# At exit, every object left moves to the permanent generation and the interpreter's final
# collections skip it: they traversed what SQLAlchemy and click leave behind for 60-80 ms at
# every command's exit here (a sixth of a `state` run). Nothing is lost: commands dispose of
# their engines and flush their output before they return, and freezing keeps every object
# reachable (logging's own exit handler still flushes its files, before or after this one).
atexit.register(gc.freeze)

# command name -> "module:attribute" of its click command (or group)
COMMANDS = {
    "config": "recorder.commands.config:group",
    "db": "recorder.commands.db:group",
    "run": "recorder.commands.run:command",
    "demo": "recorder.commands.demo:command",
    "rebuild": "recorder.commands.rebuild:command",
    "replay": "recorder.commands.replay:command",
    "state": "recorder.commands.state:command",
    "serve-replay": "recorder.commands.serve_replay:command",
    "verify": "recorder.commands.verify:command",
    "report": "recorder.commands.report:command",
    "export": "recorder.commands.export:command",
    "compare": "recorder.commands.compare:command",
    "head": "recorder.commands.head:command",
    "backfill": "recorder.commands.backfill:command",
    "status": "recorder.commands.status:command",
    "simulate": "recorder.commands.simulate:command",
}


class LazyGroup(click.Group):
    """Loads a command's module when the command is looked up (click's documented pattern)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module, attr = target.split(":")
        command = getattr(importlib.import_module(module), attr)
        assert isinstance(command, click.Command)
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="bfx-account-recorder")
def main() -> None:
    """Record a Bitfinex account's WebSocket history into SQL, project it, replay it."""


if __name__ == "__main__":  # pragma: no cover
    main()
