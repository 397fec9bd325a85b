"""The README's promises: the demo fills every table, and its audit queries work."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import orjson
import pytest
import sqlalchemy as sa

from recorder.config import DatabaseConfig
from recorder.store.engine import create_engine

ROOT = Path(__file__).resolve().parent.parent


def query(queries: dict[str, str], title: str) -> str:
    """The README query whose heading comment starts with ``title``."""
    found = [q for t, q in queries.items() if t.startswith(title)]
    assert len(found) == 1, (title, list(queries))
    return found[0]


def readme_queries(heading: str = "## Auditing with SQL") -> dict[str, str]:
    """The SQL blocks of a README section, by the comment that heads each one."""
    text = (ROOT / "README.md").read_text()
    section = text.split(heading, 1)[1].split("\n## ", 1)[0]
    out = {}
    for block in re.findall(r"```sql\n(.*?)```", section, re.S):
        title, _, sql = block.partition("\n")
        out[title.strip("- ").strip()] = sql.strip().rstrip(";")
    return out


@pytest.mark.slow
def test_demo_fills_every_table_and_audit_queries_answer(tmp_path: Path, db_url: str) -> None:
    env = {**os.environ, "BFX_RECORDER_DATABASE_URL": db_url}
    proc = subprocess.run(
        [
            *(sys.executable, "-m", "recorder", "demo", "--seconds", "3", "--rate", "300"),
            # malformed every half second: one arrives however long the start takes
            *("--faults", "malformed@0.5/0.5,drop@1.5"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "rows in orders" in proc.stdout
    # Piped, the progress table is printed once, after the run: as it ended.
    progress = dict(
        (cells[1].strip(), cells[2].strip())
        for line in proc.stdout.splitlines()
        if (cells := line.split("│")) and len(cells) == 4
    )
    assert progress["connected"] == "no" and progress["last end reason"] == "shutdown"
    assert "┘               recorded" not in proc.stdout  # no title glued to a border
    lines = proc.stdout.strip().splitlines()
    assert lines[-1].startswith("statement of this run: ") and lines[-1].split()[4].endswith(
        "demo-statement.html"
    )
    hint = lines[-2]
    assert hint.startswith(
        "query it: sqlite3 " if "sqlite" in db_url else "query it: psql 'postgresql://"
    )
    again = subprocess.run(
        [sys.executable, "-m", "recorder", "demo", "--seconds", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert again.returncode == 2
    assert "already holds a demo recording" in again.stderr and "--append" in again.stderr
    checked = subprocess.run(
        [sys.executable, "-m", "recorder", "verify", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert checked.returncode == 0, checked.stderr
    report = orjson.loads(checked.stdout)
    assert report["ok"] and report["accounts"]["demo"]["broken_at"] is None
    assert report["counts"]["session-ended"] == 1 and report["counts"]["malformed"] >= 1
    times = [f["at"] for f in report["findings"]]
    assert times == sorted(times)  # by time
    ended = next(f for f in report["findings"] if f["what"] == "session-ended")
    assert ended["seconds"] > 0 and "not recorded for" in ended["detail"]
    engine = create_engine(DatabaseConfig(url=db_url))
    with engine.connect() as conn:
        counts = {
            t: conn.execute(sa.text(f"SELECT COUNT(*) FROM {t} WHERE account = 'demo'")).scalar()
            for t in (
                "sessions",
                "events",
                "orders",
                "positions",
                "wallets",
                "trades",
                "funding_offers",
                "funding_credits",
                "funding_loans",
                "funding_trades",
                "balance_info",
                "margin_info",
                "funding_info",
                "notifications",
                "projector_checkpoints",
            )
        }
        assert all(n for n in counts.values()), counts
        assert counts["sessions"] >= 2  # the demo's scheduled drop made it reconnect

        queries = readme_queries()
        dialect = "PostgreSQL" if engine.dialect.name == "postgresql" else "SQLite"
        open_orders = conn.execute(sa.text(queries["Open orders"])).all()
        assert (
            len(open_orders)
            == conn.execute(
                sa.text("SELECT COUNT(*) FROM orders WHERE account = 'demo' AND is_open")
            ).scalar()
        )
        assert open_orders

        fees = {
            r.fee_currency: Decimal(str(r.fees))
            for r in conn.execute(sa.text(query(queries, "Fees per currency")))
        }
        # Every trade once by id, from the socket's tu frames and the backfill's REST answers.
        fills: dict[int, tuple[str, Decimal]] = {}
        for kind, frame in conn.execute(
            sa.text("SELECT kind, frame FROM events WHERE kind IN ('tu', 'rest.trades-hist')")
        ):
            for tu in [orjson.loads(frame)[2]] if kind == "tu" else orjson.loads(frame):
                fills[tu[0]] = (tu[10], Decimal(repr(tu[9])))
        expected: dict[str, Decimal] = {}
        for ccy, fee in fills.values():
            expected[ccy] = expected.get(ccy, Decimal(0)) + fee
        assert fees.keys() == expected.keys()
        for ccy, total in expected.items():
            assert fees[ccy] == total, ccy  # exact, SQLite included

        order_fills = conn.execute(sa.text(query(queries, "Fills of an order"))).all()
        latest = conn.execute(
            sa.text(
                "SELECT order_id FROM trades WHERE account = 'demo' "
                "ORDER BY mts_create DESC, id DESC LIMIT 1"
            )
        ).scalar()
        assert order_fills
        assert {r.id for r in order_fills} == set(
            conn.execute(
                sa.text("SELECT id FROM trades WHERE order_id = :o"), {"o": latest}
            ).scalars()
        )

        wallet = conn.execute(
            sa.text(
                "SELECT balance FROM wallets WHERE account = 'demo' "
                "AND wallet_type = 'exchange' AND currency = 'USD'"
            )
        ).scalar()
        at_now = conn.execute(
            sa.text(query(queries, f"Balance of a wallet at a time ({dialect}"))
        ).one()
        assert Decimal(str(at_now.balance)) == Decimal(str(wallet))
        history = conn.execute(sa.text(query(queries, "Balance history of one wallet"))).all()
        wu = [
            orjson.loads(f)[2][2]
            for (f,) in conn.execute(
                sa.text("SELECT frame FROM events WHERE kind = 'wu' ORDER BY id")
            )
            if orjson.loads(f)[2][:2] == ["exchange", "USD"]
        ]
        live = [float(r.balance) for r in history if r.source == "wu"]
        assert live == wu  # every update, in order
        assert any(r.source == "ws" for r in history)  # and the snapshots
        assert Decimal(str(history[-1].balance)) == Decimal(str(wallet))

        gaps = conn.execute(sa.text(query(queries, "Which periods are missing"))).all()
        assert len(gaps) == counts["sessions"] - 1  # one per reconnect
        assert all(bool(g.backfilled) and g.seconds > 0 for g in gaps)
        assert all(g.reason == "closed" for g in gaps)  # the demo's scheduled drop

        # The backfill section's queries: the demo's drop was backfilled completely.
        backfill = readme_queries("## The gap backfill (REST history)")
        all_fees = {
            r.fee_currency: Decimal(str(r.fees))
            for r in conn.execute(sa.text(backfill["Every fee per currency, gaps included"]))
        }
        assert all_fees.keys() == fees.keys()
        ledger = conn.execute(
            sa.text(backfill["Balance history of one wallet from the ledger"])
        ).all()
        assert ledger and all(r.balance is not None for r in ledger)
        gaps = next(q for title, q in backfill.items() if title.startswith("Which periods"))
        missing = conn.execute(sa.text(gaps)).all()
        assert missing == []
        assert conn.execute(
            sa.text("SELECT COUNT(*) FROM backfills WHERE account = 'demo' AND complete")
        ).scalar()
    engine.dispose()


def test_sqlite_balance_at_now_includes_the_current_second(tmp_path: Path) -> None:
    """The README's SQLite "now" keeps the fraction of a second: a balance changed a few
    milliseconds ago is the balance now (``datetime('now')`` would cut to the second and
    miss it)."""
    from datetime import UTC, datetime, timedelta

    from recorder.store import migrate
    from recorder.store.schema import wallet_history

    engine = create_engine(DatabaseConfig(url=f"sqlite:///{tmp_path / 'r.db'}"))
    migrate.upgrade(engine)
    then = datetime.now(UTC) - timedelta(milliseconds=2)
    row = {"account": "demo", "wallet_type": "exchange", "currency": "USD"}
    with engine.begin() as conn:
        for ref, at, balance in ((1, then - timedelta(seconds=5), 1), (2, then, 2)):
            conn.execute(
                wallet_history.insert().values(
                    **row, source="wu", ref=ref, at=at, balance=balance, event_id=ref
                )
            )
        got = conn.execute(
            sa.text(query(readme_queries(), "Balance of a wallet at a time (SQLite"))
        ).one()
    engine.dispose()
    assert Decimal(str(got.balance)) == 2
