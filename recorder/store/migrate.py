"""Programmatic Alembic: ``db upgrade | current | downgrade`` and ``run``'s auto-migration.

The migrations live in the top-level ``migrations/`` of a checkout and are copied into the
wheel as ``recorder/_migrations``; :func:`script_location` finds whichever is there, so an
installed package migrates from any working directory.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection, Engine

import recorder


def script_location() -> Path:
    package = Path(recorder.__file__).resolve().parent
    for candidate in (package / "_migrations", package.parent / "migrations"):
        if (candidate / "env.py").is_file():
            return candidate
    raise FileNotFoundError("migrations not found next to the recorder package")


def _config() -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(script_location()))
    return cfg


# Any constant: the key of the PostgreSQL advisory lock that serializes migrations.
MIGRATION_LOCK = 0x62667872  # "bfxr"


def _serialized(conn: Connection) -> None:
    """Several recorder processes may start together on one PostgreSQL database: the first to
    take the lock migrates, the others then find the schema at head."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})")


def upgrade(engine: Engine, revision: str = "head") -> None:
    cfg = _config()
    with engine.begin() as conn:
        _serialized(conn)
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


def downgrade(engine: Engine, revision: str) -> None:
    cfg = _config()
    with engine.begin() as conn:
        _serialized(conn)
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, revision)


def current(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head() -> str | None:
    return ScriptDirectory.from_config(_config()).get_current_head()


# The revision that creates the event log: undoing it drops every recorded event.
HISTORY_REVISION = "0001"


def undoes(engine: Engine, target: str) -> list[str]:
    """The revisions a downgrade from the database's current revision to ``target`` would
    undo, newest first (raises alembic's CommandError for a target it cannot resolve)."""
    now = current(engine)
    if now is None:
        return []
    script = ScriptDirectory.from_config(_config())
    return [r.revision for r in script.iterate_revisions(now, target)]
