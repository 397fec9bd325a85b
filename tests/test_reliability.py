"""The log's promise at its edges: exactly once under ambiguous commits, ..."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
import trio

from recorder.config import DatabaseConfig, WriterConfig
from recorder.replay.verify import verify
from recorder.store import migrate
from recorder.store.database import Database
from recorder.store.engine import create_engine
from recorder.store.errors import StoreUnavailable
from recorder.store.eventlog import EventLog, NewEvent
from recorder.writer import Writer
from tests.proxy import CommitCutter

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def frames(account: str, first: int, last: int) -> list[NewEvent]:
    return [
        NewEvent(account, None, T0 + timedelta(milliseconds=n), 0, "on", None, None, f"[0,{n}]")
        for n in range(first, last + 1)
    ]


async def write(writer: Writer, items: list[NewEvent], account: str) -> None:
    """Hand ``items`` to the writer and wait until they are committed."""
    for item in items:
        await writer.send_channel.send(item)
    target = writer.stats.committed_events + len(items)
    with trio.fail_after(30):
        while writer.stats.committed_events < target:
            await writer.wait_beyond(account, writer.high_water.get(account, 0), 0.05)


def assert_once_in_order(engine: sa.Engine, items: list[NewEvent]) -> None:
    stored = [e.frame for e in EventLog(engine).iterate("main")]
    assert stored == [i.frame for i in items]  # every frame once, in order
    report = verify(engine, "main")
    assert report.ok and report.checked["main"] == len(items)


async def test_ambiguous_commit_sqlite_is_not_stored_twice(tmp_path: object) -> None:
    """The commit succeeds but the writer is told the connection failed (a fault hook at the
    store's Python boundary): it finds the batch landed and does not append it again."""
    engine = create_engine(DatabaseConfig(url=f"sqlite:///{tmp_path}/r.db"))
    migrate.upgrade(engine)
    writer = Writer(Database(engine), WriterConfig(batch_max_ms=5))
    faults: list[int] = []

    def lost_reply() -> None:
        if not faults:
            faults.append(1)
            raise StoreUnavailable("database unavailable: connection lost after COMMIT (test)")

    items = frames("main", 1, 300)
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        await write(writer, items[:100], "main")
        writer.log.after_commit = lost_reply
        await write(writer, items[100:], "main")
        writer.send_channel.close()
        await writer.done.wait()
    assert faults and writer.stats.retries >= 1
    assert_once_in_order(engine, items)
    engine.dispose()


@pytest.mark.postgres
async def test_ambiguous_commit_postgres_is_not_stored_twice(pg_url: str) -> None:
    """A proxy forwards COMMIT, swallows its reply and cuts the connection."""
    direct = create_engine(DatabaseConfig(url=pg_url))
    migrate.upgrade(direct)
    async with trio.open_nursery() as nursery:
        proxy = CommitCutter()
        port = await nursery.start(proxy.serve)
        # Only the writer goes through the proxy (the loop must stay free to run it).
        engine = create_engine(DatabaseConfig(url=pg_url.replace(":5432/", f":{port}/")))
        writer = Writer(Database(engine), WriterConfig(batch_max_ms=5))
        items = frames("main", 1, 300)
        await nursery.start(writer.run)
        await write(writer, items[:100], "main")
        proxy.arm()
        await write(writer, items[100:], "main")
        writer.send_channel.close()
        await writer.done.wait()
        nursery.cancel_scope.cancel()
    assert proxy.cuts == 1 and writer.stats.retries >= 1
    engine.dispose()
    assert_once_in_order(direct, items)
    direct.dispose()
