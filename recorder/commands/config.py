"""``bfx-recorder config check``: validate the configuration, print the effective settings."""

from __future__ import annotations

import json

import click

from recorder import config as config_mod
from recorder.commands.common import with_config
from recorder.config import Config


@click.group("config")
def group() -> None:
    """Inspect the configuration."""


@group.command("check")
@with_config
def check(cfg: Config) -> None:
    """Validate the configuration and print the effective settings (secrets as set/unset)."""
    click.echo(json.dumps(config_mod.describe(cfg), indent=2))
