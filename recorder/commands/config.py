"""``bfx-recorder config check``: validate the configuration, print the effective settings."""

from __future__ import annotations

import json

import click

from recorder import config as config_mod
from recorder.commands.common import check_listen, check_sqlite_folder, with_config
from recorder.config import Config, ConfigError


@click.group("config")
def group() -> None:
    """Inspect the configuration."""


@group.command("check")
@with_config
def check(cfg: Config) -> None:
    """Validate the configuration and print the effective settings (secrets as set/unset) and
    where each came from; exit 2 if an account's credentials are not there, the SQLite
    database's folder is missing, or the metrics address cannot be served."""
    check_sqlite_folder(cfg)
    check_listen(cfg)
    click.echo(json.dumps(config_mod.describe(cfg), indent=2))
    missing = []
    for acc in cfg.accounts:
        key_set, secret_set = acc.has_credentials()
        if not key_set:
            missing.append(f"{acc.api_key_env} (accounts.{acc.name}.api_key_env)")
        if not secret_set:
            missing.append(f"{acc.api_secret_env} (accounts.{acc.name}.api_secret_env)")
    if missing:
        raise ConfigError(
            "accounts",
            f"credentials not set: {', '.join(missing)}",
            "export those variables (or set api_secret_file) before `bfx-recorder run`",
        )
