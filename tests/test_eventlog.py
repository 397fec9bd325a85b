"""The event-log interface (``EventLog``) and the store's error boundary, on both backends."""

from __future__ import annotations

import sqlite3
from datetime import timedelta
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
import sqlalchemy.exc
import trio
from sqlalchemy import event

from recorder.audit.verify import verify
from recorder.config import DatabaseConfig, WriterConfig
from recorder.projections.base import Event
from recorder.protocol import classify
from recorder.store import migrate
from recorder.store.database import Database
from recorder.store.engine import create_engine
from recorder.store.errors import StoreError, StoreUnavailable, store_errors, translate
from recorder.store.eventlog import EventLog, NewEvent
from recorder.store.hashchain import GENESIS
from recorder.writer import Writer
from tests.conftest import PG_URL
from tests.helpers import EV_T0, ev

T0 = EV_T0


def test_append_read_positions(engine: sa.Engine) -> None:
    log = EventLog(engine)
    assert log.accounts() == []
    assert log.high_water("a") == 0
    assert log.head("a") == (0, GENESIS)
    items = [ev("a" if n % 3 else "b", n, "on" if n % 2 else "wu") for n in range(1, 31)]
    result = log.append(items, {})
    assert result.count == 30
    assert log.accounts() == ["a", "b"]
    top_a = log.high_water("a")
    assert top_a == result.last_ids["a"]
    assert log.head("a") == (top_a, result.last_hashes["a"])

    # Every event of an account once, in order, across pages of any size.
    every_a = [e for e in log.iterate("a", page=4)]
    assert [e.frame for e in every_a] == [i.frame for i in items if i.account == "a"]
    assert [e.id for e in every_a] == sorted(e.id for e in every_a)
    # Kinds filter and `covered`: a page that is not full covers up to the high-water mark.
    page = log.read("a", 0, 1000, kinds=["wu"])
    assert {e.kind for e in page.events} == {"wu"}
    assert page.covered == top_a
    # A full page covers only up to its last event.
    page = log.read("a", 0, 3, kinds=["wu"])
    assert len(page.events) == 3 and page.covered == page.events[-1].id
    # up_to bounds the page.
    cut = every_a[5].id
    page = log.read("a", 0, 1000, up_to=cut)
    assert page.events[-1].id == cut and page.covered == cut
    # brief reads carry what a fold needs.
    brief = log.read("a", 0, 2, brief=True).events[0]
    assert (brief.id, brief.kind, brief.frame) == (every_a[0].id, every_a[0].kind, every_a[0].frame)
    # Brief rows carry the driver's value (text on SQLite), read as a time where used.
    stamp = Event(brief.id, brief.kind, None, brief.received_at).received_at
    assert stamp == every_a[0].received_at and brief.hash is None
    # at_time: the last event received at or before a moment.
    assert log.at_time("a", T0 + timedelta(seconds=10)) == max(
        e.id for e in every_a if e.received_at <= T0 + timedelta(seconds=10)
    )
    assert log.at_time("a", T0) == 0
    assert log.count(["a"]) == len(every_a)
    assert log.count_by_kind("b") == {"on": 5, "wu": 5}
    assert log.totals("b").events == 10
    assert log.totals("b").last_received_at == T0 + timedelta(seconds=30)


def test_error_mapping_covers_every_driver() -> None:
    assert isinstance(
        translate(sqlite3.OperationalError("database or disk is full")), StoreUnavailable
    )
    assert isinstance(
        translate(sqlite3.OperationalError("attempt to write a readonly database")),
        StoreUnavailable,
    )
    assert isinstance(translate(sqlite3.OperationalError("database is locked")), StoreUnavailable)
    no_table = translate(sqlite3.OperationalError("no such table: events"))
    assert type(no_table) is StoreError
    assert isinstance(
        translate(psycopg.OperationalError("server closed the connection")), StoreUnavailable
    )
    assert type(translate(psycopg.errors.UniqueViolation("dup"))) is StoreError
    wrapped = sqlalchemy.exc.OperationalError("SELECT 1", {}, sqlite3.OperationalError("locked"))
    assert isinstance(translate(wrapped), StoreUnavailable)
    with pytest.raises(StoreUnavailable) as info, store_errors():
        raise psycopg.errors.AdminShutdown("terminating connection")
    assert isinstance(info.value.__cause__, psycopg.Error)


def test_reading_a_database_without_tables_is_a_store_error(tmp_path: Any) -> None:
    engine = create_engine(DatabaseConfig(url=f"sqlite:///{tmp_path / 'empty.db'}"))
    try:
        with pytest.raises(StoreError, match="no such table"):
            EventLog(engine).accounts()
    finally:
        engine.dispose()


@pytest.mark.postgres
async def test_backend_killed_during_copy_keeps_the_batch(pg_url: str) -> None:
    """A psycopg error raised on the raw COPY path (the writer's connection terminated by the
    server mid-append) is a StoreUnavailable: the writer keeps the batch and retries."""
    engine = create_engine(DatabaseConfig(url=pg_url))
    migrate.upgrade(engine)
    admin = sa.create_engine(PG_URL)
    killed: list[int] = []

    @event.listens_for(engine, "after_cursor_execute")
    def kill_after_lock(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        # After the append transaction took its lock, before the COPY: terminate the backend.
        if statement.startswith("LOCK TABLE events") and not killed:
            pid = cursor.connection.info.backend_pid
            with admin.connect() as c:
                assert c.execute(sa.text("SELECT pg_terminate_backend(:p, 5000)"), {"p": pid})
            killed.append(pid)

    writer = Writer(Database(engine), WriterConfig(batch_max_ms=5))
    items = [ev("main", n) for n in range(1, 201)]
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(writer.run)
            async with writer.send_channel as send:
                for item in items:
                    await send.send(item)
            with trio.fail_after(30):
                await writer.done.wait()
        assert killed, "the fault was never injected"
        assert writer.stats.retries >= 1
        stored = list(EventLog(engine).iterate("main"))
        assert [e.frame for e in stored] == [i.frame for i in items]  # once each, in order
        report = verify(engine, "main")
        assert report.ok and report.checked["main"] == len(items)
    finally:
        engine.dispose()
        admin.dispose()


@pytest.mark.postgres
def test_a_copy_the_server_refuses_is_a_store_error(pg_url: str) -> None:
    """An error raised by psycopg itself on the raw COPY path, with the connection still
    alive (here a foreign key the server checks: no such session), is mapped at the
    boundary, not leaked as a driver exception."""
    engine = create_engine(DatabaseConfig(url=pg_url))
    migrate.upgrade(engine)
    try:
        bad = ev("main", 1)._replace(session_id=424242)
        with pytest.raises(StoreError) as info:
            EventLog(engine).append([bad], {})
        assert isinstance(info.value.__cause__, psycopg.Error)
        assert EventLog(engine).high_water("main") == 0
    finally:
        engine.dispose()


def test_a_frame_with_a_raw_nul_is_kept_on_both_backends(engine: sa.Engine) -> None:
    """Remote garbage with a NUL character (which PostgreSQL text cannot hold) is stored, with
    the NUL as its JSON escape, classified malformed, and the chain verifies."""
    text = '[0,"on",\x00]'
    frame = classify(text)
    assert frame.kind == "malformed"
    item = NewEvent("main", None, T0, frame.chan_id, frame.kind, None, None, frame.text)
    EventLog(engine).append([item, ev("main", 2)], {})
    stored = list(EventLog(engine).iterate("main"))
    assert [e.frame for e in stored] == ['[0,"on",\\u0000]', ev("main", 2).frame]
    assert verify(engine, "main").ok


def test_sqlite_append_reads_no_more_than_the_batch(tmp_path: Any) -> None:
    """Every query an append runs on SQLite searches an index or the id range: none scans
    the log (one did: the batch's last ids were found by walking a whole index, so a batch
    cost more the longer the log, 0.27 s at 1.4 million rows)."""
    engine = create_engine(DatabaseConfig(url=f"sqlite:///{tmp_path / 'plan.db'}"))
    migrate.upgrade(engine)
    log = EventLog(engine)
    log.append([ev("a" if n % 2 else "b", n, "on") for n in range(1, 201)], {})
    seen: list[tuple[str, Any]] = []

    @event.listens_for(engine, "before_cursor_execute")
    def _capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "events" in statement:
            seen.append((statement, parameters))

    log.append([ev("a", n, "on") for n in range(201, 221)], log.heads(["a", "b"]))
    event.remove(engine, "before_cursor_execute", _capture)
    assert seen, "the append's queries were not seen"
    with engine.connect() as conn:
        raw = conn.connection.dbapi_connection
        assert raw is not None
        for statement, parameters in seen:
            plan = raw.execute(f"EXPLAIN QUERY PLAN {statement}", parameters).fetchall()
            scans = [row[-1] for row in plan if str(row[-1]).startswith("SCAN events")]
            assert not scans, (statement, plan)
    engine.dispose()


def test_postgresql_reads_pages_in_index_order_without_statistics(pg_url: str) -> None:
    """The page queries read an index in id order on a PostgreSQL table that has never been
    analyzed (autovacuum off, or right after a bulk load). Planned from default estimates,
    they were a bitmap scan of the whole remaining range plus a sort: after a 5,000,000-frame
    burst the live projectors folded 2,000-3,500 events/s, 2.2 s a page."""
    engine = create_engine(DatabaseConfig(url=pg_url))
    migrate.upgrade(engine)
    with engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE events SET (autovacuum_enabled = false)")
        conn.exec_driver_sql(
            "INSERT INTO events (account, received_at, kind, frame, hash)"
            " SELECT 'acct-' || mod(g, 2), now(), (ARRAY['ou', 'wu', 'tu'])[1 + mod(g, 3)],"
            " '[0,\"ou\",[1,2,3]]', md5(g::text) FROM generate_series(1, 300000) g"
        )
        analyzed = conn.exec_driver_sql(
            "SELECT coalesce(last_analyze, last_autoanalyze) FROM pg_stat_user_tables"
            " WHERE relid = 'events'::regclass"
        ).scalar()
    assert analyzed is None, "the table was analyzed: the test would not show the plan"
    plans: list[str] = []

    @event.listens_for(engine, "after_cursor_execute")
    def _explain(_conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if "FROM events" in statement and "ORDER BY events.id" in statement:
            explained = cursor.connection.execute(f"EXPLAIN {statement}", parameters)
            plans.append("\n".join(row[0] for row in explained.fetchall()))

    log = EventLog(engine)
    page = log.read("acct-1", 1000, 2000, up_to=290000)
    assert [e.id for e in page.events] == list(range(1001, 5001, 2))
    kind_of = {0: "ou", 1: "wu", 2: "tu"}  # id n has kind_of[n % 3], account n % 2
    page = log.read("acct-1", 1000, 2000, kinds=["ou", "wu"], brief=True)
    wanted = [n for n in range(1001, 9000, 2) if kind_of[n % 3] in ("ou", "wu")][:2000]
    assert [e.id for e in page.events] == wanted
    page = log.read_accounts(["acct-0", "acct-1"], 1000, 290000, 2000, ["ou", "tu"])
    wanted = [n for n in range(1001, 9000) if kind_of[n % 3] in ("ou", "tu")][:2000]
    assert [e.id for e in page.events] == wanted
    event.remove(engine, "after_cursor_execute", _explain)
    assert len(plans) == 3, plans
    for plan in plans:
        assert "Index Scan" in plan and "Bitmap" not in plan and "Sort" not in plan, plan
    # The planner's settings are the server's again after a read inside a transaction.
    with engine.begin() as conn:
        log.read("acct-1", 0, 10, conn=conn)
        settings = conn.exec_driver_sql(
            "SELECT current_setting('enable_bitmapscan'), current_setting('enable_sort')"
        ).one()
    assert tuple(settings) == ("on", "on")
    engine.dispose()
