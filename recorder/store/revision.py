"""The schema revision, without importing Alembic: what read-only commands check before
they read (``tests/test_migrations.py`` asserts that :data:`HEAD` is Alembic's head)."""

from __future__ import annotations

import sqlalchemy as sa

from recorder.store.errors import store_errors

HEAD = "0009"  # the newest revision in migrations/versions


def current(engine: sa.Engine) -> str | None:
    """The database's revision (``alembic_version``), or None for a database without one."""
    with store_errors(), engine.connect() as conn:
        if not sa.inspect(conn).has_table("alembic_version"):
            return None
        return conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()
