"""Shared fixtures: every store test runs on SQLite and on the real PostgreSQL server.

PostgreSQL tests use the server this machine kind starts (127.0.0.1:5432, trust auth, database
``test``), or ``$BFX_RECORDER_TEST_PG_URL``. Each test gets a schema of its own, dropped
afterwards, so runs never see each other's leftovers. In CI (``CI=true``) or with
``BFX_RECORDER_REQUIRE_PG=1`` an unreachable server fails the tests; elsewhere they are skipped
with the reason.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from recorder.config import DatabaseConfig
from recorder.store import migrate
from recorder.store.engine import create_engine

PG_URL = os.environ.get(
    "BFX_RECORDER_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
REQUIRE_PG = (
    os.environ.get("CI", "").lower() == "true" or os.environ.get("BFX_RECORDER_REQUIRE_PG") == "1"
)

_pg_status: list[str | None] = []


def _pg_unavailable_reason() -> str | None:
    if not _pg_status:
        try:
            engine = sa.create_engine(PG_URL)
            with engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
            engine.dispose()
            _pg_status.append(None)
        except Exception as exc:  # any driver/connection error means "not reachable"
            _pg_status.append(f"PostgreSQL at {PG_URL} unreachable: {type(exc).__name__}: {exc}")
    return _pg_status[0]


def pg_schema_url() -> Iterator[str]:
    """A URL whose connections use a fresh, private schema; the schema is dropped after."""
    reason = _pg_unavailable_reason()
    if reason:
        if REQUIRE_PG:
            pytest.fail(f"PostgreSQL tests are required here (CI) but {reason}")
        pytest.skip(reason)
    schema = f"t_{uuid.uuid4().hex[:16]}"
    admin = sa.create_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in PG_URL else "?"
    try:
        yield f"{PG_URL}{sep}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'recorder.db'}"
    else:
        yield from pg_schema_url()


@pytest.fixture
def pg_url() -> Iterator[str]:
    yield from pg_schema_url()


@pytest.fixture
def engine(db_url: str) -> Iterator[sa.Engine]:
    """A migrated engine on each backend."""
    eng = create_engine(DatabaseConfig(url=db_url))
    migrate.upgrade(eng)
    yield eng
    eng.dispose()
