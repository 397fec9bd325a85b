"""Alembic environment, usable as a library.

The application passes an open connection in ``config.attributes["connection"]``; the plain
``alembic`` command gets its URL from the recorder's own configuration. Logging is configured
from alembic.ini only when run from the ``alembic`` command, so the application's logging is
never reset by a migration.
"""

from logging.config import fileConfig

from alembic import context

from recorder.store.schema import metadata

config = context.config
target_metadata = metadata


def _run(connection) -> None:  # type: ignore[no-untyped-def]
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    # Invoked as `alembic ...` from the repository root.
    if config.config_file_name is not None:
        fileConfig(config.config_file_name, disable_existing_loggers=False)
    from recorder.config import load
    from recorder.store.engine import create_engine

    engine = create_engine(load().database)
    try:
        with engine.connect() as conn:
            _run(conn)
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) mode is not supported; run against a database")
run_online()
