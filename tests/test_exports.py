"""Exports (issue: exports): Bitfinex's report CSVs, Koinly and rotki imports, Parquet and CSV,
the Python data API and ``compare``.

Golden tests freeze every header and the date and number formatting of each format on a
log written by hand (exponent notation, 16+ significant digits, a colon pair, a funding
symbol); the Parquet tables are read back with pyarrow, pandas and polars and compared with
the projection tables value by value (Decimal equality), on both backends; ``compare`` finds
exactly the differences planted in an exported file.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from recorder.config import DatabaseConfig
from recorder.data import open_recording
from recorder.data.tables import TABLES, DataError, rows
from recorder.export import bitfinex, tax
from recorder.projections.rebuild import rebuild
from recorder.store import migrate
from recorder.store.engine import create_engine
from recorder.store.eventlog import EventLog, NewEvent
from recorder.store.sessions import open_session

ROOT = Path(__file__).resolve().parent.parent
T0 = datetime(2026, 3, 1, 9, 5, 7, 123000, tzinfo=UTC)
MS = int(T0.timestamp() * 1000)


def cli(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "recorder", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


# --- the formats' pieces ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [
        ("YY-MM-DD", "26-03-01 09:05:07"),
        ("YYYY-MM-DD", "2026-03-01 09:05:07"),
        ("DD-MM-YY", "01-03-26 09:05:07"),
        ("DD-MM-YYYY", "01-03-2026 09:05:07"),
        ("MM-DD-YY", "03-01-26 09:05:07"),
        ("MM-DD-YYYY", "03-01-2026 09:05:07"),
    ],
)
def test_bitfinex_date_formats(fmt: str, expected: str) -> None:
    assert bitfinex.DateStyle(fmt).write(T0) == expected
    assert bitfinex.DateStyle(fmt, milliseconds=True).write(T0) == expected + ".123"


def test_time_zones_and_refusals() -> None:
    plus2 = bitfinex.DateStyle("YYYY-MM-DD", tz=bitfinex.zone("+02:00"))
    assert plus2.write(T0) == "2026-03-01 11:05:07"
    assert bitfinex.zone("-0530").utcoffset(None) == -timedelta(hours=5, minutes=30)
    zurich = bitfinex.DateStyle("YYYY-MM-DD", tz=bitfinex.zone("Europe/Zurich"))
    assert zurich.write(T0) == "2026-03-01 10:05:07"  # CET in March before the switch
    with pytest.raises(bitfinex.FormatError, match="not a time zone"):
        bitfinex.zone("Mars/Olympus")
    with pytest.raises(bitfinex.FormatError, match="date formats"):
        bitfinex.DateStyle("DD/MM/YYYY")


def test_pairs_numbers_and_fee_percent() -> None:
    assert bitfinex.pair("tBTCUSD") == "BTC/USD"
    assert bitfinex.pair("tTESTBTC:TESTUSD") == "TESTBTC/TESTUSD"
    assert bitfinex.pair("fUSD") == "USD"
    assert bitfinex.plain(Decimal("1E-7")) == "0.0000001"
    assert bitfinex.plain(Decimal("1.2345678901234567")) == "1.2345678901234567"
    assert bitfinex.plain(Decimal("29640.0")) == "29640.0"  # as received: not normalised
    row = sa.engine.row  # (only for the type below)
    del row

    class R:
        symbol, exec_amount, exec_price = "tBTCUSD", Decimal("-0.5"), Decimal("30000")
        fee, fee_currency = Decimal("-15"), "USD"

    assert bitfinex.fee_perc(R) == "0.1"
    R.fee, R.fee_currency = Decimal("-0.001"), "BTC"
    assert bitfinex.fee_perc(R) == "0.2"
    R.fee_currency = "EUR"
    assert bitfinex.fee_perc(R) == ""


# --- a log written by hand: the golden files ------------------------------------------------


_NUMERIC = re.compile(r'"(-?\d+(?:\.\d+)?(?:e-?\d+)?)"')


def _raw(value: Any) -> str:
    """JSON as the exchange writes it: numbers given here as text (to keep every digit and
    exponent notation) unquoted."""
    return _NUMERIC.sub(r"\1", orjson.dumps(value).decode())


def _frame(kind: str, record: Any) -> str:
    return _raw([0, kind, record])


def hand_log() -> list[tuple[str, str]]:
    """Fills (one with exponent notation and 16+ significant digits, one on a colon pair,
    one margin), a funding trade, ledger entries of every kind the tax formats sort, a
    movement and an order."""
    t = MS
    trade = [101, "tBTCUSD", t, 9001, 0.5, 30000.5, "EXCHANGE LIMIT", 30000.5, 1, -0.001, "BTC"]
    colon = [
        102,
        "tTESTBTC:TESTUSD",
        t + 1000,
        9002,
        "-1.23456789012345",
        "2.5e-1",
        "EXCHANGE MARKET",
        None,
        -1,
        "-3.08641972530862e-4",
        "TESTUSD",
    ]
    margin = [103, "tETHUSD", t + 2000, 9003, -2, 2000, "LIMIT", 2000, 1, -4, "USD"]
    ledger = [
        [
            501,
            "USD",
            None,
            t,
            None,
            "-15000.25",
            "5000",
            None,
            "Exchange 0.5 BTC for USD @ 30000.5 on wallet exchange",
        ],
        [
            502,
            "BTC",
            None,
            t,
            None,
            "0.5",
            "1.5",
            None,
            "Exchange 0.5 BTC for USD @ 30000.5 on wallet exchange",
        ],
        [
            503,
            "BTC",
            None,
            t,
            None,
            "-0.001",
            "1.499",
            None,
            "Trading fees for 0.5 BTC (BTCUSD) @ 30000.5 on BFX (0.2%) on wallet exchange",
        ],
        [
            504,
            "USD",
            None,
            t + 2000,
            None,
            "-4",
            "996",
            None,
            "Trading fees for 2.0 ETH (ETHUSD) @ 2000.0 on BFX (0.1%) on wallet margin",
        ],
        [
            505,
            "USD",
            None,
            t + 3000,
            None,
            "1.23e-6",
            "100.00000123",
            None,
            "Margin Funding Payment on wallet funding",
        ],
        [
            506,
            "USD",
            None,
            t + 4000,
            None,
            "-2.5",
            "993.5",
            None,
            "Margin Funding Charge on wallet margin",
        ],
        [
            507,
            "USD",
            None,
            t + 5000,
            None,
            "-100",
            "893.5",
            None,
            "Transfer of 100.0 USD from wallet Margin to Exchange on wallet margin",
        ],
        [
            508,
            "USD",
            None,
            t + 6000,
            None,
            "12.5",
            "906",
            None,
            "Settlement @ 2010.0 on wallet margin",
        ],
        [
            509,
            "BTC",
            None,
            t + 7000,
            None,
            "1",
            "2.499",
            None,
            "Deposit (BITCOIN) #77 on wallet exchange",
        ],
        [
            510,
            "BTC",
            None,
            t + 8000,
            None,
            "-0.0004",
            "2.4986",
            None,
            "Crypto Withdrawal fee on wallet exchange",
        ],
        [
            511,
            "USD",
            None,
            t + 9000,
            None,
            "7",
            "913",
            None,
            "Something new at Bitfinex on wallet margin",
        ],
    ]
    movement = [601, "BTC", "BITCOIN", None, None, t + 7000, t + 7500, None, None, "COMPLETED", None, None, 1, -0.0004, None, None, "bc1qexample", None, None, None, "abc123", None]  # fmt: skip
    order = [9001, None, 55, "tBTCUSD", t - 1000, t, 0, 0.5, "EXCHANGE LIMIT", None, None, None, 0, "EXECUTED @ 30000.5(0.5)", None, None, 30000.5, 30000.5, 0, 0, None, None, None, 0, 0, None, None, None, "API>BFX", None, None, {"note": "a,b"}]  # fmt: skip
    return [
        ("tu", _frame("tu", trade)),
        ("tu", _frame("tu", colon)),
        ("tu", _frame("tu", margin)),
        ("fte", _frame("fte", [701, "fUSD", t + 500, 41, 50, 0.0002, 2, 1])),
        ("oc", _frame("oc", order)),
        ("rest.ledgers-hist", _raw(ledger)),
        ("rest.movements-hist", _raw([movement])),
    ]


def store(engine: sa.Engine, log: list[tuple[str, str]], account: str = "acct") -> None:
    sid = open_session(engine, account, "ws://127.0.0.1/ws/2", T0)
    items = [
        NewEvent(account, sid, T0 + timedelta(seconds=i), 0, kind, None, None, frame)
        for i, (kind, frame) in enumerate(log)
    ]
    EventLog(engine).append(items, {})
    rebuild(engine, [account])


@pytest.fixture
def hand_engine(db_url: str) -> Iterator[tuple[sa.Engine, str]]:
    """The hand-written log, folded, on each backend (15 significant digits at most: SQLite
    keeps no more in its NUMERIC columns; PostgreSQL keeps all, see the test below)."""
    url = db_url
    engine = create_engine(DatabaseConfig(url=url))
    migrate.upgrade(engine)
    store(engine, hand_log())
    yield engine, url
    engine.dispose()


GOLDEN_BITFINEX = {
    "trades": """#,PAIR,AMOUNT,PRICE,FEE,FEE PERC,FEE CURRENCY,DATE,ORDER ID
101,BTC/USD,0.5,30000.5,-0.001,0.2,BTC,01-03-2026 10:05:07.123,9001
102,TESTBTC/TESTUSD,-1.23456789012345,0.25,-0.000308641972530862,0.1,TESTUSD,01-03-2026 10:05:08.123,9002
103,ETH/USD,-2,2000,-4,0.1,USD,01-03-2026 10:05:09.123,9003
""",
    "ledgers": """#,DESCRIPTION,CURRENCY,AMOUNT,BALANCE,DATE,WALLET
501,Exchange 0.5 BTC for USD @ 30000.5 on wallet exchange,USD,-15000.25,5000,01-03-2026 10:05:07.123,exchange
502,Exchange 0.5 BTC for USD @ 30000.5 on wallet exchange,BTC,0.5,1.5,01-03-2026 10:05:07.123,exchange
503,Trading fees for 0.5 BTC (BTCUSD) @ 30000.5 on BFX (0.2%) on wallet exchange,BTC,-0.001,1.499,01-03-2026 10:05:07.123,exchange
504,Trading fees for 2.0 ETH (ETHUSD) @ 2000.0 on BFX (0.1%) on wallet margin,USD,-4,996,01-03-2026 10:05:09.123,margin
505,Margin Funding Payment on wallet funding,USD,0.00000123,100.00000123,01-03-2026 10:05:10.123,funding
506,Margin Funding Charge on wallet margin,USD,-2.5,993.5,01-03-2026 10:05:11.123,margin
507,Transfer of 100.0 USD from wallet Margin to Exchange on wallet margin,USD,-100,893.5,01-03-2026 10:05:12.123,margin
508,Settlement @ 2010.0 on wallet margin,USD,12.5,906,01-03-2026 10:05:13.123,margin
509,Deposit (BITCOIN) #77 on wallet exchange,BTC,1,2.499,01-03-2026 10:05:14.123,exchange
510,Crypto Withdrawal fee on wallet exchange,BTC,-0.0004,2.4986,01-03-2026 10:05:15.123,exchange
511,Something new at Bitfinex on wallet margin,USD,7,913,01-03-2026 10:05:16.123,margin
""",
    "movements": """#,DATE,CURRENCY,STATUS,AMOUNT,FEES,DESCRIPTION,TRANSACTION ID,NOTE
601,01-03-2026 10:05:14.623,BTC,COMPLETED,1,-0.0004,bc1qexample,abc123,
""",
    "orders": """#,PAIR,TYPE,PREVIOUS ORDER TYPE,AMOUNT,EXECUTED AMOUNT,PRICE,AVERAGE EXECUTION PRICE,TRAILING PRICE,CREATED,UPDATED,STATUS,METADATA
9001,BTC/USD,EXCHANGE LIMIT,,0.5,0.5,30000.5,30000.5,0,01-03-2026 10:05:06.123,01-03-2026 10:05:07.123,EXECUTED @ 30000.5(0.5),"{""note"":""a,b""}"
""",
    "funding-trades": """#,PAIR,AMOUNT,RATE,PERIOD,MAKER,DATE,OFFER ID
701,USD,50,0.0002,2,1,01-03-2026 10:05:07.623,41
""",
}
GOLDEN_KOINLY = """Date,Sent Amount,Sent Currency,Received Amount,Received Currency,Fee Amount,Fee Currency,Net Worth Amount,Net Worth Currency,Label,Description,TxHash
2026-03-01 09:05 UTC,15000.25,USD,0.5,BTC,0.001,BTC,,,,Bitfinex fill 101: 0.5 BTC/USD @ 30000.5,bitfinex:trade:101
2026-03-01 09:05 UTC,1.23456789012345,TESTBTC,0.3086419725308625,TESTUSD,0.000308641972530862,TESTUSD,,,,Bitfinex fill 102: -1.23456789012345 TESTBTC/TESTUSD @ 0.25,bitfinex:trade:102
2026-03-01 09:05 UTC,4,USD,,,,,,,margin fee,Trading fees for 2.0 ETH (ETHUSD) @ 2000.0 on BFX (0.1%) on wallet margin,bitfinex:ledger:504
2026-03-01 09:05 UTC,,,0.00000123,USD,,,,,lending interest,Margin Funding Payment on wallet funding,bitfinex:ledger:505
2026-03-01 09:05 UTC,2.5,USD,,,,,,,margin fee,Margin Funding Charge on wallet margin,bitfinex:ledger:506
2026-03-01 09:05 UTC,,,12.5,USD,,,,,realized gain,Settlement @ 2010.0 on wallet margin,bitfinex:ledger:508
2026-03-01 09:05 UTC,,,1,BTC,,,,,,Deposit (BITCOIN) #77 on wallet exchange,bitfinex:ledger:509
2026-03-01 09:05 UTC,0.0004,BTC,,,,,,,cost,Crypto Withdrawal fee on wallet exchange,bitfinex:ledger:510
2026-03-01 09:05 UTC,,,7,USD,,,,,,Something new at Bitfinex on wallet margin,bitfinex:ledger:511
"""
GOLDEN_ROTKI_TRADES = """Location,Spend Currency,Receive Currency,Receive Amount,Spend Amount,Fee,Fee Currency,Description,Timestamp
bitfinex,USD,BTC,0.5,15000.25,0.001,BTC,Bitfinex fill 101: 0.5 BTC/USD @ 30000.5,1772355907123
bitfinex,TESTBTC,TESTUSD,0.3086419725308625,1.23456789012345,0.000308641972530862,TESTUSD,Bitfinex fill 102: -1.23456789012345 TESTBTC/TESTUSD @ 0.25,1772355908123
"""
GOLDEN_ROTKI_EVENTS = """Type,Location,Currency,Amount,Fee,Fee Currency,Description,Timestamp
Spend,bitfinex,USD,4,0,USD,Trading fees for 2.0 ETH (ETHUSD) @ 2000.0 on BFX (0.1%) on wallet margin,1772355909123
Income,bitfinex,USD,0.00000123,0,USD,Margin Funding Payment on wallet funding,1772355910123
Spend,bitfinex,USD,2.5,0,USD,Margin Funding Charge on wallet margin,1772355911123
Income,bitfinex,USD,12.5,0,USD,Settlement @ 2010.0 on wallet margin,1772355913123
Deposit,bitfinex,BTC,1,0,BTC,Deposit (BITCOIN) #77 on wallet exchange,1772355914123
Spend,bitfinex,BTC,0.0004,0,BTC,Crypto Withdrawal fee on wallet exchange,1772355915123
Income,bitfinex,USD,7,0,USD,Something new at Bitfinex on wallet margin,1772355916123
"""


def test_golden_files(hand_engine: tuple[sa.Engine, str], tmp_path: Path) -> None:
    """Every header and every cell of each format on the hand-written log, to the byte: the
    Bitfinex files in DD-MM-YYYY with milliseconds at +01:00, Koinly and rotki."""
    _, url = hand_engine
    env = {**os.environ, "BFX_RECORDER_DATABASE_URL": url}
    out = tmp_path / "out"
    done = cli(
        env,
        tmp_path,
        "export",
        "all",
        "--format",
        "bitfinex",
        "--date-format",
        "DD-MM-YYYY",
        "--milliseconds",
        "--timezone",
        "+01:00",
        "--output",
        str(out),
    )
    assert done.returncode == 0, done.stderr
    for name, expected in GOLDEN_BITFINEX.items():
        assert (out / f"{name}_acct_ALL.csv").read_text() == expected, name
    positions = (out / "positions_acct_ALL.csv").read_text()
    assert positions == ",".join(bitfinex.HEADERS["positions"]) + "\n"  # none: header only
    for fmt, files in (
        ("koinly", {"koinly_acct_ALL.csv": GOLDEN_KOINLY}),
        (
            "rotki",
            {
                "rotki-trades_acct_ALL.csv": GOLDEN_ROTKI_TRADES,
                "rotki-events_acct_ALL.csv": GOLDEN_ROTKI_EVENTS,
            },
        ),
    ):
        done = cli(env, tmp_path, "export", "all", "--format", fmt, "--output", f"{out / fmt}/")
        assert done.returncode == 0, done.stderr
        for name, expected in files.items():
            assert (out / fmt / name).read_text() == expected, name
    assert "e-" not in (out / "koinly" / "koinly_acct_ALL.csv").read_text().lower()


def test_ledger_items_sorted_for_tax_tools() -> None:
    """Fills and their exchange-wallet fees come from the trades; transfers between own
    wallets are left out; the rest carries the tool's label."""

    class L:
        wallet = "exchange"

        def __init__(self, category: int | None, amount: str, wallet: str = "exchange") -> None:
            self.category, self.amount, self.wallet = category, Decimal(amount), wallet

    assert tax.ledger_item(L(5, "1")) is None
    assert tax.ledger_item(L(201, "-1")) is None
    assert tax.ledger_item(L(201, "-1", "margin")) == ("margin fee", "Spend")
    assert tax.ledger_item(L(51, "-100")) is None
    assert tax.ledger_item(L(28, "0.1")) == ("lending interest", "Income")
    assert tax.ledger_item(L(262, "0.1")) == ("staking", "Staking")
    assert tax.ledger_item(L(22, "-3")) == ("realized gain", "Loss")
    assert tax.ledger_item(L(None, "-3")) == ("", "Spend")


# --- a simulated account: Parquet read back exactly, on both backends -----------------------


def _demo(db_url: str, tmp_path: Path) -> dict[str, str]:
    env = {**os.environ, "BFX_RECORDER_DATABASE_URL": db_url}
    run = cli(env, tmp_path, "demo", "--seconds", "3", "--rate", "300", "--faults", "drop@1.5")
    assert run.returncode == 0, run.stderr[-2000:]
    return env


def _same(value: Any, stored: Any) -> bool:
    if stored is None or value is None:
        return value is None and stored is None
    if isinstance(stored, Decimal):
        return isinstance(value, Decimal) and value == stored
    if isinstance(stored, datetime):
        return value == stored
    if isinstance(stored, (dict, list)):
        return orjson.loads(value) == stored
    return value == stored


@pytest.mark.slow
def test_parquet_read_back_exactly_by_pyarrow_pandas_and_polars(
    db_url: str, tmp_path: Path
) -> None:
    import pandas as pd
    import polars as pl

    env = _demo(db_url, tmp_path)
    out = tmp_path / "parquet"
    done = cli(env, tmp_path, "export", "all", "--format", "parquet", "--output", str(out))
    assert done.returncode == 0, done.stderr
    engine = create_engine(DatabaseConfig(url=db_url))
    try:
        with engine.connect() as conn:
            for name, spec in TABLES.items():
                path = out / f"{name}_demo_ALL.parquet"
                table = pq.read_table(path)
                assert table.schema == spec.schema, name
                stored = list(rows(conn, spec, "demo"))
                assert table.num_rows == len(stored) > 0 or name == "positions", name
                by_arrow = table.to_pylist()
                frame = pd.read_parquet(path)
                polar = pl.read_parquet(path)
                for i, row in enumerate(stored):
                    for j, column in enumerate(table.column_names):
                        want = row[j]
                        assert _same(by_arrow[i][column], want), (name, column, i)
                        from_pandas = frame[column].iloc[i]
                        if want is None:
                            assert from_pandas is None or pd.isna(from_pandas), (name, column)
                        elif isinstance(want, Decimal):
                            assert from_pandas == want, (name, column, i)
                        elif isinstance(want, datetime):
                            assert from_pandas.to_pydatetime() == want, (name, column, i)
                        from_polars = polar[column][i]
                        if isinstance(want, Decimal):
                            assert from_polars == want, (name, column, i)
                # A fill's amounts are never floats anywhere.
                if name == "fills":
                    assert pa.types.is_decimal(table.schema.field("fee").type)
                    assert isinstance(polar.schema["fee"], pl.Decimal)
                    assert set(table.column("source").to_pylist()) == {"live", "backfill"}
    finally:
        engine.dispose()
    # CSV: the same tables, plain decimals and ISO 8601 UTC times.
    done = cli(env, tmp_path, "export", "fills", "--format", "csv", "--output", "-")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split(",") == [n for n, _, _ in TABLES["fills"].columns]
    assert re.search(r",\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z,", lines[1])
    assert "e-" not in done.stdout.lower().replace("exchange", "")


# --- compare ----------------------------------------------------------------------------------


def test_compare_finds_exactly_the_planted_differences(
    hand_engine: tuple[sa.Engine, str], tmp_path: Path
) -> None:
    _, url = hand_engine
    env = {**os.environ, "BFX_RECORDER_DATABASE_URL": url}
    done = cli(env, tmp_path, "export", "trades", "--format", "bitfinex", "--output", "t.csv")
    assert done.returncode == 0, done.stderr
    same = cli(env, tmp_path, "compare", "t.csv", "--json")
    assert same.returncode == 0, same.stdout
    assert orjson.loads(same.stdout)["same"] is True
    # As the report site writes it: a BOM, Windows line ends, another date format, +02:00.
    done = cli(
        env,
        tmp_path,
        "export",
        "ledgers",
        "--format",
        "bitfinex",
        "--date-format",
        "MM-DD-YYYY",
        "--timezone",
        "+02:00",
        "--output",
        "l.csv",
    )
    assert done.returncode == 0, done.stderr
    text = (tmp_path / "l.csv").read_text()
    (tmp_path / "site.csv").write_bytes(b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode())
    # Every date is a 1st of March: DD-MM and MM-DD both read them; compare says so.
    unsure = cli(env, tmp_path, "compare", "site.csv", "--timezone", "+02:00", "--json")
    assert any("--date-format" in n for n in orjson.loads(unsure.stdout)["notes"])
    same = cli(
        env, tmp_path, "compare", "site.csv", "--timezone", "+02:00", "--date-format",
        "MM-DD-YYYY", "--json",
    )  # fmt: skip
    assert same.returncode == 0, same.stdout
    assert orjson.loads(same.stdout)["date_format"] == "MM-DD-YYYY"

    lines = (tmp_path / "t.csv").read_text().splitlines()
    header, body = lines[0], lines[1:]
    removed = body.pop(1)  # a row removed (only in the record)
    first = body[0].split(",")
    first[4] = "-0.0011"  # a fee changed
    body[0] = ",".join(first)
    body.append("999,BTC/USD,1,30000,-0.1,,USD,26-03-01 09:05:08,1")  # a row added
    (tmp_path / "planted.csv").write_text("\n".join([header, *body]) + "\n")
    found = cli(env, tmp_path, "compare", "planted.csv", "--json")
    assert found.returncode == 1
    doc = orjson.loads(found.stdout)
    assert doc["only_in_file"] == ["999"]
    assert doc["only_in_record"] == [removed.split(",")[0]]
    assert doc["differ"] == [{"id": "101", "field": "FEE", "file": "-0.0011", "record": "-0.001"}]
    readable = cli(env, tmp_path, "compare", "planted.csv")
    assert "#101 FEE: file '-0.0011', record '-0.001'" in readable.stdout
    assert "DIFFERENT" in readable.stdout


# --- bad input ------------------------------------------------------------------------------


def test_bad_input_is_a_clear_error(hand_engine: tuple[sa.Engine, str], tmp_path: Path) -> None:
    _, url = hand_engine
    env = {**os.environ, "BFX_RECORDER_DATABASE_URL": url}
    # A range with no rows: a header-only file, exit 0.
    empty = cli(
        env, tmp_path, "export", "trades", "--format", "bitfinex", "--from", "2030-01-01",
        "--output", "-",
    )  # fmt: skip
    assert empty.returncode == 0 and empty.stdout == ",".join(bitfinex.HEADERS["trades"]) + "\n"
    # An account that does not exist: exit 2 naming the known ones.
    unknown = cli(env, tmp_path, "export", "trades", "--format", "csv", "--account", "nope")
    assert unknown.returncode == 2 and "acct" in unknown.stderr
    # An output that exists: refused unless --force.
    args = ("export", "ledgers", "--format", "csv", "--output", "x.csv")
    assert cli(env, tmp_path, *args).returncode == 0
    again = cli(env, tmp_path, *args)
    assert again.returncode == 2 and "--force" in again.stderr
    assert cli(env, tmp_path, *args, "--force").returncode == 0
    # A folder that cannot be written (here: under a file, which even root cannot do): one
    # line, exit 1.
    (tmp_path / "plain").write_text("a file")
    denied = cli(env, tmp_path, "export", "all", "--format", "csv", "--output", "plain/sub/")
    assert denied.returncode == 1, denied.stderr
    assert len(denied.stderr.strip().splitlines()) == 1 and "Traceback" not in denied.stderr
    # No such file for the format: exit 2 naming what there is.
    frames = cli(env, tmp_path, "export", "frames", "--format", "bitfinex")
    assert frames.returncode == 2 and "trades" in frames.stderr
    # compare: an unknown header names the headers it reads.
    (tmp_path / "odd.csv").write_text("a,b,c\n1,2,3\n")
    odd = cli(env, tmp_path, "compare", "odd.csv")
    assert odd.returncode == 2 and "#,PAIR,AMOUNT" in odd.stderr and "Traceback" not in odd.stderr


def test_a_value_past_the_published_scale_is_refused_not_rounded(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'long.db'}"
    engine = create_engine(DatabaseConfig(url=url))
    migrate.upgrade(engine)
    trade = [1, "tBTCUSD", MS, 2, "1e-20", 1, "EXCHANGE LIMIT", 1, 1, 0, "USD"]
    store(engine, [("tu", _frame("tu", trade))])
    with open_recording(url) as rec, pytest.raises(DataError, match="more than 18 decimals"):
        rec.fills()
    engine.dispose()


# --- the data API, and the README's example -------------------------------------------------


def test_data_api_ranges_accounts_and_state(hand_engine: tuple[sa.Engine, str]) -> None:
    _, url = hand_engine
    with open_recording(url) as rec:
        assert rec.accounts() == ["acct"]
        everything = rec.ledgers()
        later = rec.ledgers(start=T0 + timedelta(seconds=5), end="2026-03-01T09:05:16")
        assert everything.num_rows == 11
        assert later.column("id").to_pylist() == [507, 508, 509, 510]
        assert rec.fills().column("fee").to_pylist()[1] == Decimal("-0.000308641972530862")
        with pytest.raises(ValueError, match="known"):
            rec.fills(account="other")
        state = rec.state_at(T0 + timedelta(hours=1), what="orders")
        assert state.num_rows == 0  # the one order was closed
        batches = list(rec.batches("frames", rows=3))
        assert [b.num_rows for b in batches] == [3, 3, 1]


def readme_example() -> str:
    text = (ROOT / "README.md").read_text()
    found = re.search(r"<!-- data-example -->\s*```python\n(.*?)```", text, re.S)
    assert found, "the README's data example is marked <!-- data-example -->"
    return found.group(1)


def test_readme_data_example_runs(hand_engine: tuple[sa.Engine, str], tmp_path: Path) -> None:
    _, url = hand_engine
    code = readme_example().replace("sqlite:///recorder.db", url)
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert "Decimal" in done.stdout or "decimal" in done.stdout


def test_csv_cells_are_plain(tmp_path: Path) -> None:
    from recorder.export.files import csv_cell

    assert csv_cell(Decimal("1E-9")) == "0.000000001"
    assert csv_cell(datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=2)))) == (
        "2026-01-02T01:04:05.000000Z"
    )
    assert csv_cell({"a": 1}) == '{"a":1}'


# The published schema: a change here is a CHANGELOG entry (README "Exports and data").
SCHEMA = {
    "fills": "account:string, id:int64, symbol:string, mts_create:timestamp[ns, tz=UTC], order_id:int64, exec_amount:decimal128(38, 18), exec_price:decimal128(38, 18), order_type:string, order_price:decimal128(38, 18), maker:int64, fee:decimal128(38, 18), fee_currency:string, cid:int64, confirmed_by:int64, event_id:int64, received_at:timestamp[ns, tz=UTC], source:string, attribution:string",
    "ledgers": "account:string, id:int64, currency:string, wallet:string, mts:timestamp[ns, tz=UTC], amount:decimal128(38, 18), balance:decimal128(38, 18), description:string, event_id:int64, category:int64, received_at:timestamp[ns, tz=UTC], source:string",
    "wallet_history": "account:string, wallet_type:string, currency:string, ref:int64, at:timestamp[ns, tz=UTC], balance:decimal128(38, 18), unsettled_interest:decimal128(38, 18), available_balance:decimal128(38, 18), description:string, event_id:int64, kind:string, received_at:timestamp[ns, tz=UTC], source:string",
    "orders": "account:string, id:int64, gid:int64, cid:int64, symbol:string, mts_create:timestamp[ns, tz=UTC], mts_update:timestamp[ns, tz=UTC], amount:decimal128(38, 18), amount_orig:decimal128(38, 18), order_type:string, type_prev:string, mts_tif:timestamp[ns, tz=UTC], flags:int64, order_status:string, price:decimal128(38, 18), price_avg:decimal128(38, 18), price_trailing:decimal128(38, 18), price_aux_limit:decimal128(38, 18), notify:int64, hidden:int64, placed_id:int64, routing:string, meta:string, is_open:bool, confirmed_by:int64, event_id:int64, received_at:timestamp[ns, tz=UTC], source:string",
    "positions": "account:string, symbol:string, status:string, amount:decimal128(38, 18), base_price:decimal128(38, 18), margin_funding:decimal128(38, 18), margin_funding_type:int64, pl:decimal128(38, 18), pl_perc:decimal128(38, 18), price_liq:decimal128(38, 18), leverage:decimal128(38, 18), position_id:int64, mts_create:timestamp[ns, tz=UTC], mts_update:timestamp[ns, tz=UTC], type:int64, collateral:decimal128(38, 18), collateral_min:decimal128(38, 18), meta:string, position_key:string, confirmed_by:int64, event_id:int64, received_at:timestamp[ns, tz=UTC], source:string",
    "funding_trades": "account:string, id:int64, symbol:string, mts_create:timestamp[ns, tz=UTC], offer_id:int64, amount:decimal128(38, 18), rate:decimal128(38, 18), period:int64, maker:int64, confirmed_by:int64, event_id:int64, received_at:timestamp[ns, tz=UTC], source:string",
    "movements": "account:string, id:int64, currency:string, currency_name:string, mts_started:timestamp[ns, tz=UTC], mts_updated:timestamp[ns, tz=UTC], status:string, amount:decimal128(38, 18), fees:decimal128(38, 18), address:string, payment_id:string, transaction_id:string, note:string, confirmed_by:int64, event_id:int64, received_at:timestamp[ns, tz=UTC], source:string",
    "frames": "id:int64, account:string, session_id:int64, received_at:timestamp[ns, tz=UTC], kind:string, seq:int64, auth_seq:int64, frame:string, hash:string",
}


def test_the_published_schema_is_frozen() -> None:
    found = {
        name: ", ".join(f"{f.name}:{f.type}" for f in spec.schema) for name, spec in TABLES.items()
    }
    assert found == SCHEMA


def readme_commands() -> list[list[str]]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Exports and data", 1)[1].split("\n## ", 1)[0]
    found = []
    for block in re.findall(r"```sh\n(.*?)```", section, re.S):
        for line in block.splitlines():
            command = line.split("  #", 1)[0].strip()
            if command.startswith("bfx-recorder "):
                found.append(command.split()[1:])
    return found


def test_readme_export_commands_run(hand_engine: tuple[sa.Engine, str], tmp_path: Path) -> None:
    """Every command of the README's exports section, as written, on a recording (the
    compare example's file exported from it first)."""
    _, url = hand_engine
    env = {**os.environ, "BFX_RECORDER_DATABASE_URL": url}
    commands = readme_commands()
    assert {c[0] for c in commands} == {"export", "compare"}, commands
    made = cli(env, tmp_path, "export", "trades", "--format", "bitfinex", "--from", "2026-01-01",
               "--output", "trades_report.csv")  # fmt: skip
    assert made.returncode == 0, made.stderr
    for args in commands:
        # (the README's ranges are a tax year; this recording is of March 2026)
        done = cli(env, tmp_path, *args)
        assert done.returncode == 0, (args, done.stdout, done.stderr)
    assert (
        tmp_path / "tax-2026" / "trades_acct_FROM_20260101T000000Z_TO_20270101T000000Z.csv"
    ).exists()
    assert any((tmp_path / "data").glob("fills_acct_ALL.parquet"))
