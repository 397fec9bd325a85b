"""Audit proofs: every fill tied to its balance effects, balances that follow from the
entries, the period statement (text, JSON, and HTML as a browser shows it)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa
import trio

from recorder.audit.balances import check_balances
from recorder.audit.verify import verify
from recorder.config import DatabaseConfig
from recorder.projections import fills
from recorder.projections.base import Event, Output
from recorder.projections.fills import FillEffectsFold, settles, split_symbol
from recorder.projections.rebuild import rebuild
from recorder.protocol.ledger import category, fill_text, group
from recorder.simulator.server import Simulator
from recorder.store import migrate
from recorder.store.engine import create_engine
from recorder.store.schema import (
    backfills,
    fill_effects,
    ledgers,
    orders,
    reconciliation_ledgers,
    reconciliations,
)
from tests.helpers import KEY, SECRET, chromium, make_recorder, need_chromium

ROOT = Path(__file__).resolve().parent.parent


def cli(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "recorder", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        cwd=cwd,
    )


# --- the rules, alone ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("Exchange 2.0 LTC for USD @ 69.5 on wallet exchange", 5),
        ("Trading fees for 2.0 LTC (LTCUSD) @ 69.5 on BFX (0.2%) on wallet exchange", 201),
        ("Margin Funding Payment on wallet funding", 28),
        ("Margin Funding Charge on wallet margin", 226),
        ("Position #1234 funding cost on wallet margin", 27),
        ("Transfer of 40.0 IOT from wallet Exchange to Trading on wallet margin", 51),
        ("Settlement @ 185.79 on wallet margin", 31),
        ("Position #42 close @ 9000 (trade) on wallet margin", 22),
        ("Deposit (BITCOIN) #16 on wallet exchange", 101),
        ("Bitcoin Withdrawal #17 on wallet exchange", 104),
        ("Bitcoin Withdrawal fee #17 on wallet exchange", 254),
        ("Canceled withdrawal #18 on wallet exchange", 105),
        ("Affiliate Rebate on wallet exchange", 241),
        ("Staking Reward on wallet exchange", 262),
        ("Something the exchange never wrote", None),
        ("", None),
    ],
)
def test_ledger_categories_follow_bitfinex_codes(text: str, code: int | None) -> None:
    assert category(text) == code
    assert (group(code) == "other") == (code is None or code in (401,))


def test_fill_texts_and_settlement_rules() -> None:
    named = fill_text("Trading fees for 0.001 BTC (BTCUSD) @ 5432.0 on BFX (0.2%)")
    assert named is not None and named.fee and named.amount == Decimal("0.001")
    assert named.price == Decimal("5432.0") and named.base == "BTC"
    assert fill_text("Exchange -0.5 ETH for USD @ 2000") == (
        False,
        Decimal("0.5"),
        "ETH",
        Decimal("2000"),
    )
    assert fill_text("Exchange x BTC for USD @ 1") is None  # unreadable: nothing named
    assert split_symbol("tTESTBTC:TESTUSD") == ("TESTBTC", "TESTUSD")
    assert split_symbol("fUSD") is None
    # A quote amount past 8 decimals settles rounded; anything else must match exactly.
    assert settles(Decimal("-150.12345679"), Decimal("-150.123456785"))
    assert not settles(Decimal("-150.1234567"), Decimal("-150.123456785"))


def _frame(kind: str, payload: Any) -> Any:
    return [0, kind, payload]


def test_split_wu_two_fills_at_one_millisecond_and_a_bare_fee() -> None:
    """Two fills of one order at the same millisecond, one paid in two wu frames; a fee wu
    without text or META: exact where amounts and META say so, inferred where only the order
    of the frames does; decimals never through floats."""
    fold, out = FillEffectsFold(), Output()
    ws = [
        ["exchange", "USD", Decimal("1000"), 0, None, None, None],
        ["exchange", "BTC", Decimal("1"), 0, None, None, None],
    ]
    fold.apply(Event(1, "ws", _frame("ws", ws)), out)
    trade = [
        7,
        "tBTCUSD",
        1,
        99,
        Decimal("0.1"),
        Decimal("100.123456785"),
        "EXCHANGE LIMIT",
        None,
        1,
        Decimal("-0.0001"),
        "BTC",
        None,
    ]
    twin = [8, *trade[1:]]
    fold.apply(Event(2, "tu", _frame("tu", trade)), out)
    fold.apply(Event(3, "tu", _frame("tu", twin)), out)
    meta = {
        "reason": "TRADE",
        "order_id": 99,
        "trade_price": "100.123456785",
        "trade_amount": "0.1",
    }
    steps = [
        ("BTC", "1.1", meta),  # trade 7 base
        ("USD", "995", meta),  # trade 7 quote, first part
        ("USD", "989.98765432", meta),  # trade 7 quote, second part (-10.01234568 in all)
        ("BTC", "1.0999", None),  # a bare fee change equal to the last fill's fee
    ]
    for n, (ccy, balance, details) in enumerate(steps, start=10):
        text = None if details is None else "Exchange 0.1 BTC for USD @ 100.123456785"
        wu = ["exchange", ccy, Decimal(balance), 0, None, text, details]
        fold.apply(Event(n, "wu", _frame("wu", wu)), out)
    rows = out.upserts["fill_effects"]
    assert rows[(7, "exchange", "BTC", "base")]["attribution"] == "exact"
    quote = rows[(7, "exchange", "USD", "quote")]
    assert quote["attribution"] == "exact" and quote["amount"] == Decimal("-10.01234568")
    assert quote["event_id"] == 12  # the wu that completed it
    assert rows[(8, "exchange", "BTC", "base")]["attribution"] == "missing"  # its twin: no wu
    fee = rows[(8, "exchange", "BTC", "fee")]
    assert fee["attribution"] == "inferred" and fee["amount"] == Decimal("-0.0001")


def test_a_later_twin_fill_gets_its_own_wu_after_a_missed_frame() -> None:
    """Two fills of one order with the same amount and price; a change between the first
    fill's quote and its wu was missed, so that wu does not add up: the second fill's wu is
    the second fill's (exact), not a second part of the first (which stays inferred)."""
    fold, out = FillEffectsFold(), Output()
    ws = [["exchange", "USD", Decimal("1000"), 0, None, None, None]]
    fold.apply(Event(1, "ws", _frame("ws", ws)), out)
    fill = [7, "tBTCUSD", 1, 99, Decimal("0.1"), Decimal("100"), "EXCHANGE LIMIT", None, 1]
    meta = {"reason": "TRADE", "order_id": 99, "trade_price": "100", "trade_amount": "0.1"}
    fold.apply(Event(2, "tu", _frame("tu", [*fill, None, None, None])), out)
    wu = ["exchange", "USD", Decimal("985"), 0, None, "Exchange", meta]  # -15, not -10
    fold.apply(Event(3, "wu", _frame("wu", wu)), out)
    fold.apply(Event(4, "tu", _frame("tu", [8, *fill[1:], None, None, None])), out)
    wu = ["exchange", "USD", Decimal("975"), 0, None, "Exchange", meta]
    fold.apply(Event(5, "wu", _frame("wu", wu)), out)
    rows = out.upserts["fill_effects"]
    first, second = rows[(7, "exchange", "USD", "quote")], rows[(8, "exchange", "USD", "quote")]
    assert (first["attribution"], first["event_id"]) == ("inferred", 3)
    assert (second["attribution"], second["event_id"]) == ("exact", 5)


def test_funding_trade_interest_carried_by_its_payment() -> None:
    """A funding trade's effect is its term's interest, carried by a payment row of exactly
    that amount; ftu after fte and a repeated REST row add nothing; a funding trade whose
    id meets an exchange trade's is still its own; a daily sum of several terms carries
    none of them."""
    fold, out = FillEffectsFold(), Output()
    fold.apply(
        Event(
            1,
            "fte",
            _frame("fte", [7, "fUSD", 1, 41, Decimal("50"), Decimal("0.00091413"), 4, None]),
        ),
        out,
    )
    fold.apply(
        Event(
            2,
            "ftu",
            _frame("ftu", [7, "fUSD", 1, 41, Decimal("50"), Decimal("0.00091413"), 4, None]),
        ),
        out,
    )
    fold.apply(
        Event(
            3, "fte", _frame("fte", [8, "fUSD", 1, 42, Decimal("-1000"), Decimal("0.002"), 7, None])
        ),
        out,
    )
    fold.apply(
        Event(
            4, "fte", _frame("fte", [9, "fUSD", 1, 43, Decimal("20"), Decimal("0.001"), 2, None])
        ),
        out,
    )
    fold.apply(
        Event(
            5, "fte", _frame("fte", [10, "fUSD", 1, 44, Decimal("20"), Decimal("0.001"), 3, None])
        ),
        out,
    )
    trade = [
        7,
        "tBTCUSD",
        1,
        99,
        Decimal("0.1"),
        Decimal("100"),
        "EXCHANGE LIMIT",
        None,
        1,
        Decimal("-0.0002"),
        "BTC",
        None,
    ]
    fold.apply(Event(6, "tu", _frame("tu", trade)), out)
    rows = out.upserts["fill_effects"]
    lent = rows[(7, "funding", "USD", "interest")]
    assert lent["amount"] == Decimal("0.18282600") and lent["attribution"] == "missing"
    assert rows[(8, "margin", "USD", "interest")]["amount"] == Decimal("-14.000")
    assert (7, "exchange", "BTC", "base") in rows  # the exchange trade 7 is its own fill
    ledger = [
        [
            900,
            "USD",
            None,
            10,
            None,
            Decimal("0.182826"),
            Decimal("5"),
            None,
            "Margin Funding Payment on wallet funding",
        ],
        [
            901,
            "USD",
            None,
            11,
            None,
            Decimal("-14"),
            Decimal("1"),
            None,
            "Margin Funding Charge on wallet margin",
        ],
        [
            902,
            "USD",
            None,
            12,
            None,
            Decimal("0.1"),
            Decimal("5.1"),
            None,
            "Margin Funding Payment on wallet funding",
        ],
    ]
    fold.apply(Event(20, "rest.ledgers-hist", ledger), out)
    fold.apply(
        Event(
            21,
            "rest.funding-trades-hist",
            [[7, "fUSD", 1, 41, Decimal("50"), Decimal("0.00091413"), 4]],
        ),
        out,
    )
    rows = out.upserts["fill_effects"]
    assert rows[(7, "funding", "USD", "interest")]["ledger_id"] == 900
    assert rows[(7, "funding", "USD", "interest")]["attribution"] == "exact"
    assert rows[(8, "margin", "USD", "interest")]["ledger_id"] == 901
    # 0.04 + 0.06 paid as one row of 0.1: neither term is carried by it.
    assert rows[(9, "funding", "USD", "interest")]["attribution"] == "missing"
    assert rows[(10, "funding", "USD", "interest")]["attribution"] == "missing"
    assert rows[(7, "funding", "USD", "interest")]["event_id"] == 20


def test_a_restored_fold_keeps_trades_and_funding_trades_apart() -> None:
    """A fold restored from its table's rows (a restarted daemon) knows which trades and
    which funding trades it has folded, each by its own numbering: a repeated funding
    trade adds nothing, an exchange trade with the same id is still a new fill, and a
    funding trade with a traded id is still a new term."""
    fold, out = FillEffectsFold(), Output()
    fte = [7, "fUSD", 1, 41, Decimal("50"), Decimal("0.00091413"), 4, None]
    tu = [8, "tBTCUSD", 1, 99, Decimal("0.1"), Decimal("100"), "EXCHANGE LIMIT", None, 1]
    fold.apply(Event(1, "fte", _frame("fte", fte)), out)
    fold.apply(Event(2, "tu", _frame("tu", [*tu, Decimal("-0.0002"), "BTC", None])), out)
    stored = [{**row, "account": "a"} for row in out.upserts["fill_effects"].values()]
    assert stored

    restored, again = FillEffectsFold(), Output()
    restored.restore(stored, fold.snapshot(), 2)
    restored.apply(Event(3, "ftu", _frame("ftu", fte)), again)  # the same funding trade
    restored.apply(Event(4, "tu", _frame("tu", [*tu, Decimal("-0.0002"), "BTC", None])), again)
    assert "fill_effects" not in again.upserts  # both seen before the restart
    restored.apply(
        Event(5, "tu", _frame("tu", [7, *tu[1:], Decimal("-0.0002"), "BTC", None])), again
    )
    restored.apply(Event(6, "fte", _frame("fte", [8, *fte[1:]])), again)
    rows = again.upserts["fill_effects"]
    assert (7, "exchange", "BTC", "base") in rows  # trade 7 meets funding trade 7's id
    assert (8, "funding", "USD", "interest") in rows  # funding trade 8 meets trade 8's id


def test_past_the_bound_the_oldest_effects_stop_waiting(monkeypatch: pytest.MonkeyPatch) -> None:
    """More effects waiting for their ledger row than the bound: the oldest are forgotten
    (a payment for one of them later carries nothing), the others still find theirs; the
    count stays at the bound."""
    monkeypatch.setattr(fills, "AWAITING_LEDGER", 6)
    fold, out = FillEffectsFold(), Output()
    for i in range(1, 11):  # ten funding terms, interest 0.011 .. 0.020 USD, none paid yet
        term = [i, "fUSD", 1, 40 + i, Decimal(10 + i), Decimal("0.001"), 1, None]
        fold.apply(Event(i, "fte", _frame("fte", term)), out)
    assert fold.awaiting_count == 6
    payment = "Margin Funding Payment on wallet funding"
    paid = [
        [900, "USD", None, 20, None, Decimal("0.012"), Decimal("5"), None, payment],  # term 2
        [901, "USD", None, 21, None, Decimal("0.018"), Decimal("6"), None, payment],  # term 8
    ]
    fold.apply(Event(30, "rest.ledgers-hist", paid), out)
    rows = out.upserts["fill_effects"]
    assert rows[(2, "funding", "USD", "interest")]["attribution"] == "missing"  # forgotten
    assert rows[(2, "funding", "USD", "interest")]["ledger_id"] is None
    assert rows[(8, "funding", "USD", "interest")]["ledger_id"] == 901
    assert fold.awaiting_count == 5
    # Forgetting goes on from the oldest still waiting (terms 5, 6 next), not a paid one.
    for i in range(11, 13):
        term = [i, "fUSD", 1, 40 + i, Decimal(10 + i), Decimal("0.001"), 1, None]
        fold.apply(Event(i + 20, "fte", _frame("fte", term)), out)
    assert fold.awaiting_count == 6
    late = [[902, "USD", None, 40, None, Decimal("0.015"), Decimal("7"), None, payment]]
    fold.apply(Event(40, "rest.ledgers-hist", late), out)
    assert out.upserts["fill_effects"][(5, "funding", "USD", "interest")]["ledger_id"] is None
    again = [[903, "USD", None, 41, None, Decimal("0.017"), Decimal("8"), None, payment]]
    fold.apply(Event(41, "rest.ledgers-hist", again), out)
    assert out.upserts["fill_effects"][(7, "funding", "USD", "interest")]["ledger_id"] == 903


# --- a simulated account, end to end ---------------------------------------------------------


def _rows(engine: sa.Engine, table: sa.Table, order: list[str]) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [
            dict(r)
            for r in conn.execute(
                sa.select(table).where(table.c.account == "demo").order_by(*order)
            ).mappings()
        ]


def _explanations(engine: sa.Engine) -> list[tuple[Any, ...]]:
    rec, link = reconciliations.c, reconciliation_ledgers.c
    with engine.connect() as conn:
        return sorted(
            (r.event_id, r.projection, r.key, r.explained_by, r.ledger_id)
            for r in conn.execute(
                sa.select(rec.event_id, rec.projection, rec.key, rec.explained_by, link.ledger_id)
                .outerjoin(reconciliation_ledgers, link.reconciliation_id == rec.id)
                .where(rec.account == "demo")
            )
        )


@pytest.mark.slow
def test_every_fill_attributed_and_every_balance_follows(tmp_path: Path, db_url: str) -> None:
    env = {**os.environ, "BFX_RECORDER_DATABASE_URL": db_url}
    run = cli(env, tmp_path, "demo", "--seconds", "4", "--rate", "300", "--faults", "drop@2")
    assert run.returncode == 0, run.stderr[-2000:]
    engine = create_engine(DatabaseConfig(url=db_url))
    try:
        effects = _rows(engine, fill_effects, ["trade_id", "wallet_type", "currency", "part"])
        with engine.connect() as conn:
            trades = conn.execute(
                sa.text(
                    "SELECT id, order_type, event_id, confirmed_by FROM trades "
                    "WHERE account = 'demo'"
                )
            ).all()
            categories = (
                conn.execute(sa.select(ledgers.c.category).where(ledgers.c.account == "demo"))
                .scalars()
                .all()
            )
        assert len(trades) > 20
        by_trade: dict[Any, list[dict[str, Any]]] = {}
        for e in effects:
            by_trade.setdefault(e["trade_id"], []).append(e)
        for t in trades:
            parts = sorted(e["part"] for e in by_trade[t.id])
            margin = not t.order_type.startswith("EXCHANGE")
            assert parts == (["fee"] if margin else ["base", "fee", "quote"]), t
        fills = [e for e in effects if e["part"] != "interest"]
        assert {e["attribution"] for e in fills} == {"exact"}, [
            e for e in fills if e["attribution"] != "exact"
        ]
        assert {e["source"] for e in fills} == {"live", "backfill"}  # the drop's gap too
        assert all(e["ledger_id"] is not None for e in fills)
        # Funding trades: a term's interest, carried by the payment row of that amount; a
        # term not paid yet (its credit still open) has none and stays missing.
        with engine.connect() as conn:
            payments = dict(
                conn.execute(
                    sa.select(ledgers.c.id, ledgers.c.amount).where(
                        ledgers.c.account == "demo", ledgers.c.category == 28
                    )
                ).all()
            )
        interest = [e for e in effects if e["part"] == "interest"]
        paid = [e for e in interest if e["attribution"] == "exact"]
        assert paid and all(payments[e["ledger_id"]] == e["amount"] for e in paid)
        for e in interest:
            if e["attribution"] != "exact":
                assert e["attribution"] == "missing" and e["ledger_id"] is None
                assert e["amount"].quantize(Decimal("1e-8")) not in payments.values(), e
        # Provenance: trades the socket gave keep their tu; REST only confirms them.
        confirmed = [t for t in trades if t.confirmed_by is not None]
        assert confirmed and all(t.event_id < t.confirmed_by for t in confirmed)
        # Final states from orders/hist: an order a frame closed keeps that frame's event_id
        # where the answer only repeats it; the answer is named in confirmed_by either way.
        with engine.connect() as conn:
            orders_confirmed = conn.execute(
                sa.text(
                    "SELECT o.id, o.event_id, o.confirmed_by, e.kind FROM orders o "
                    "JOIN events e ON e.id = o.event_id "
                    "WHERE o.account = 'demo' AND o.confirmed_by IS NOT NULL"
                )
            ).all()
        assert {o.kind for o in orders_confirmed} >= {"oc"}, orders_confirmed
        for o in orders_confirmed:
            assert o.event_id < o.confirmed_by or (
                o.event_id == o.confirmed_by and o.kind == "rest.orders-hist"
            ), o
        # Every category the simulator writes is recognised; none unknown.
        assert None not in categories
        assert {5, 201, 28, 226, 51, 101, 104, 254} <= set(categories)

        # Wallet differences at the reconnect: explained by ledger rows, exactly.
        wallet_recs = [x for x in _explanations(engine) if x[1] == "wallets"]
        assert wallet_recs and all(x[3] is not None and x[4] is not None for x in wallet_recs)

        checked = cli(env, tmp_path, "verify", "--balances", "--json")
        assert checked.returncode == 0, checked.stdout[-3000:]
        balances = orjson.loads(checked.stdout)["balances"]
        assert balances["ok"] and "snapshot break" not in balances["counts"]
        assert all(w["links_verified"] == w["ledger_rows"] - 1 for w in balances["wallets"])

        statement = cli(env, tmp_path, "report", "--from", "2000-01-01", "--format", "json")
        assert statement.returncode == 0, statement.stdout[-3000:]
        doc = orjson.loads(statement.stdout)
        assert doc["balanced"] and doc["wallets"]
        groups = set()
        for w in doc["wallets"]:
            total = Decimal(w["opening"]) + sum(Decimal(v) for v in w["entries"].values())
            assert total == Decimal(w["closing"]), w  # to the last digit
            assert w["closing"] == w["socket_closing"], w  # ledger and socket agree
            assert "e" not in w["closing"].lower()  # plain decimals
            groups |= set(w["entries"])
        assert {
            "trades",
            "fees",
            "funding income",
            "funding costs",
            "deposits",
            "withdrawals",
            "transfers",
        } <= groups
        gap = doc["health"]["gaps"]
        assert gap and all(g["backfilled"] for g in gap) and doc["health"]["chain_verified"]

        # Rebuilt from the log: the same attribution and explanations.
        before = (effects, _explanations(engine), _rows(engine, orders, ["id"]))
        rebuild(engine, ["demo"])
        after = (
            _rows(engine, fill_effects, ["trade_id", "wallet_type", "currency", "part"]),
            _explanations(engine),
            _rows(engine, orders, ["id"]),
        )
        assert after == before

        # Break the ledger on purpose: a wrong balance, then a missing row.
        with engine.connect() as conn:
            victim = conn.execute(
                sa.select(ledgers.c.id, ledgers.c.balance)
                .where(
                    ledgers.c.account == "demo",
                    ledgers.c.wallet == "exchange",
                    ledgers.c.currency == "USD",
                )
                .order_by(ledgers.c.id)
                .offset(3)
                .limit(1)
            ).one()
        with engine.begin() as conn:
            conn.execute(
                ledgers.update()
                .where(ledgers.c.account == "demo", ledgers.c.id == victim.id)
                .values(balance=victim.balance + Decimal("0.01"))
            )
        broken = cli(env, tmp_path, "verify", "--balances")
        assert broken.returncode == 1
        assert f"ledger row {victim.id}: balance" in broken.stdout
        assert "balances BROKEN" in broken.stdout
        with engine.begin() as conn:
            conn.execute(
                ledgers.update()
                .where(ledgers.c.account == "demo", ledgers.c.id == victim.id)
                .values(balance=victim.balance)
            )
            conn.execute(
                ledgers.delete().where(ledgers.c.account == "demo", ledgers.c.id == victim.id)
            )
        assert cli(env, tmp_path, "verify", "--balances").returncode == 1
        unbalanced = cli(env, tmp_path, "report", "--from", "2000-01-01")
        assert unbalanced.returncode == 1 and "does not follow" in unbalanced.stdout
    finally:
        engine.dispose()


# --- the HTML statement, as a browser shows it ----------------------------------------------


@pytest.mark.slow
def test_html_statement_in_a_real_browser(tmp_path: Path) -> None:
    need_chromium()
    url = f"sqlite:///{tmp_path / 'recorder.db'}"
    env = {**os.environ, "BFX_RECORDER_DATABASE_URL": url}
    run = cli(env, tmp_path, "demo", "--seconds", "3", "--rate", "200", "--faults", "drop@1.5")
    assert run.returncode == 0, run.stderr[-2000:]
    page = tmp_path / "statement.html"
    made = cli(
        env, tmp_path, "report", "--from", "2000-01-01", "--format", "html", "--output", str(page)
    )
    assert made.returncode == 0, made.stderr
    as_json = orjson.loads(
        cli(env, tmp_path, "report", "--from", "2000-01-01", "--format", "json").stdout
    )
    html_text = page.read_text()
    assert "http://" not in html_text and "https://" not in html_text  # nothing to fetch
    # The page as the browser built it (no network: the proxy goes nowhere).
    dom = chromium("--dump-dom", page.as_uri()).stdout.decode()
    shown = dict(re.findall(r'data-field="([^"]+)">([^<]*)<', dom))
    assert shown, dom[:500]
    for w in as_json["wallets"]:
        key = f"{w['wallet']}/{w['currency']}"
        assert shown[f"{key}/opening"] == w["opening"]
        assert shown[f"{key}/closing"] == w["closing"]
        for name, amount in w["entries"].items():
            assert shown[f"{key}/{name}"] == amount
    for fee in as_json["fees"]:
        assert shown[f"fees/{fee['currency']}"] == fee["amount"]
    for pair in as_json["pairs"]:
        assert shown[f"pairs/{pair['symbol']}/volume"] == pair["volume"]
    assert shown["health/sessions"] == str(as_json["health"]["sessions"])
    assert len(re.findall(r"<polyline", dom)) == len([w for w in as_json["wallets"]])
    # Drawn: the chart's blue line is in the screenshot.
    shot = tmp_path / "statement.png"
    chromium(f"--screenshot={shot}", "--window-size=1400,1500", "--hide-scrollbars", page.as_uri())
    assert shot.exists()
    assert _has_colour(shot.read_bytes(), (0x1F, 0x6F, 0xD1))
    keep = os.environ.get("BFX_RECORDER_SCREENSHOTS")
    if keep:
        shutil.copy(shot, Path(keep) / "statement.png")


def _has_colour(png: bytes, rgb: tuple[int, int, int]) -> bool:
    """Whether a PNG has pixels of (about) this colour (decoded with zlib: no image library
    needed)."""
    import struct
    import zlib

    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    pos, data, width, height, channels = 8, b"", 0, 0, 4
    while pos < len(png):
        length, kind = struct.unpack(">I4s", png[pos : pos + 8])
        body = png[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour = struct.unpack(">IIBB", body[:10])
            assert depth == 8
            channels = {2: 3, 6: 4}[colour]
        elif kind == b"IDAT":
            data += body
        pos += 12 + length
    raw = zlib.decompress(data)
    stride = width * channels
    previous = bytearray(stride)
    found = 0
    at = 0
    for _ in range(height):
        mode, line = raw[at], bytearray(raw[at + 1 : at + 1 + stride])
        at += 1 + stride
        for i in range(stride):
            left = line[i - channels] if i >= channels else 0
            up, corner = previous[i], previous[i - channels] if i >= channels else 0
            if mode == 1:
                line[i] = (line[i] + left) & 255
            elif mode == 2:
                line[i] = (line[i] + up) & 255
            elif mode == 3:
                line[i] = (line[i] + (left + up) // 2) & 255
            elif mode == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                pred = left if pa <= pb and pa <= pc else (up if pb <= pc else corner)
                line[i] = (line[i] + pred) & 255
        for x in range(0, stride, channels):
            if all(abs(line[x + c] - rgb[c]) <= 12 for c in range(3)):
                found += 1
        previous = line
    return found > 50


# --- the ledger while connected, and the history before the first start ---------------------


async def test_ledger_is_fetched_while_connected_and_history_once(tmp_path: Path) -> None:
    """No gap at all: the ledger still arrives (ledger-only windows while connected), the
    history from ``history_from`` is asked for once (not again at the next start), and every
    ledger link verifies."""
    engine = create_engine(DatabaseConfig(url=f"sqlite:///{tmp_path / 'l.db'}"))
    migrate.upgrade(engine)
    sim = Simulator(seed=7, rate=200, api_keys={KEY: SECRET})
    options = {
        "ledger_every_s": 0.3,  # (the configuration allows 30 s at least; tests go faster)
        "history_from": datetime(2020, 1, 1, tzinfo=UTC),
    }

    def windows() -> list[Any]:
        with engine.connect() as conn:
            return conn.execute(sa.select(backfills).order_by(backfills.c.id)).all()

    async with trio.open_nursery() as nursery:
        port = await nursery.start(sim.serve)
        rest_port = await nursery.start(sim.serve_rest)
        for run in (1, 2):
            recorder = make_recorder(engine, port, rest_port=rest_port, account_options=options)
            await nursery.start(recorder.run)
            with trio.fail_after(30):
                while sum(1 for w in windows() if w.reason == "ledger" and w.complete) < 2 * run:
                    await trio.sleep(0.05)
            recorder.stop()
            await recorder.finished.wait()
        nursery.cancel_scope.cancel()
    reasons = [w.reason for w in windows()]
    assert reasons.count("initial") == 1  # asked once, not at the second start
    with engine.connect() as conn:
        fetched = conn.execute(
            sa.select(sa.func.count()).select_from(ledgers).where(ledgers.c.account == "main")
        ).scalar_one()
    assert fetched > 10
    report = check_balances(engine, "main")
    assert report.ok
    assert all(t.links_verified == t.ledger_rows - 1 for t in report.tallies.values())
    # The daemon's own downtime between the two runs is a gap verify lists.
    found = verify(engine, "main").findings
    assert [f.what for f in found].count("downtime") == 1
    url = f"sqlite:///{tmp_path / 'l.db'}"
    env = {**os.environ, "BFX_RECORDER_DATABASE_URL": url}
    everything = cli(env, tmp_path, "verify", "--details")
    assert everything.returncode == 0 and "downtime" in everything.stdout
    later = cli(env, tmp_path, "verify", "--since", "2999-01-01T00:00:00Z")
    assert later.returncode == 0 and "0 finding(s)" in later.stdout
    # A window whose start marker has no end marker (the recorder stopped during it): shown
    # as interrupted, not as still running, once the account no longer records.
    with engine.begin() as conn:
        last = conn.execute(sa.select(sa.func.max(backfills.c.id))).scalar_one()
        started = datetime(2026, 1, 2, tzinfo=UTC)
        conn.execute(
            backfills.insert().values(
                account="main",
                id=last + 1,
                reason="reconnect",
                window_from=started,
                window_to=started + timedelta(minutes=5),
                complete=None,
                event_id=last + 1,
            )
        )
    stopped = cli(env, tmp_path, "verify", "--details")
    assert "backfill interrupted (no end marker" in stopped.stdout, stopped.stdout[-2000:]
    assert "still running" not in stopped.stdout
    engine.dispose()


async def test_ledger_is_fetched_soon_after_a_fill(tmp_path: Path) -> None:
    """The periodic fetch is far off (1000 s), yet a fill's ledger entries come in soon: the
    fill itself asks for them (``ledger_after_fill`` later); the fills of a burst share a
    request, so there are far fewer ledger windows than fills."""
    engine = create_engine(DatabaseConfig(url=f"sqlite:///{tmp_path / 'f.db'}"))
    migrate.upgrade(engine)
    sim = Simulator(seed=3, rate=200, api_keys={KEY: SECRET})
    rest_options = {
        "pace": 0.0,
        "rate_limit_wait": 0.2,
        "attempts": 3,
        "retry_delay": 0.05,
        "retry_every": 0.5,
        "ledger_after_fill": 0.3,
    }

    def fill_entries() -> int:
        with engine.connect() as conn:
            return conn.execute(
                sa.select(sa.func.count())
                .select_from(ledgers)
                .where(ledgers.c.account == "main", ledgers.c.category == 5)
            ).scalar_one()

    async with trio.open_nursery() as nursery:
        port = await nursery.start(sim.serve)
        rest_port = await nursery.start(sim.serve_rest)
        recorder = make_recorder(
            engine,
            port,
            rest_port=rest_port,
            account_options={"ledger_every_s": 1000.0},
            rest_options=rest_options,
        )
        await nursery.start(recorder.run)
        with trio.fail_after(30):
            while fill_entries() < 4:
                await trio.sleep(0.05)
        recorder.stop()
        await recorder.finished.wait()
        nursery.cancel_scope.cancel()
    with engine.connect() as conn:
        windows = conn.execute(
            sa.select(sa.func.count()).select_from(backfills).where(backfills.c.reason == "ledger")
        ).scalar_one()
        fills = conn.execute(sa.text("SELECT COUNT(*) FROM events WHERE kind = 'tu'")).scalar_one()
    assert 1 <= windows < fills
    engine.dispose()
