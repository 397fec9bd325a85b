"""Every rule of the README's projection semantics, on the folds alone: in memory, no
database, no simulator. (test_projection_folds.py checks the persisted runner; these check
what the folds decide.)"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from recorder.projections.base import DISCONNECTED, Event, Fold, FoldFlags, Output
from recorder.projections.collection import orders_fold, positions_fold, wallets_fold
from recorder.projections.events import EVENT_FOLDS
from recorder.projections.registry import FOLDS, PROJECTION_NAMES, make_folds
from recorder.projections.snapshots import StateFold
from recorder.projections.values import parse_frame

MTS = 1_700_000_000_000


def order(oid: int, amount: str = "1", status: str = "ACTIVE", price: str = "100") -> list[Any]:
    a: list[Any] = [None] * 32
    a[0], a[3], a[4], a[5] = oid, "tBTCUSD", MTS, MTS
    a[6], a[7], a[8], a[13], a[16] = (
        Decimal(amount),
        Decimal("1"),
        "EXCHANGE LIMIT",
        status,
        Decimal(price),
    )
    return a


def position(symbol: str, pid: int | None, amount: str = "1", status: str = "ACTIVE") -> list[Any]:
    a: list[Any] = [None] * 20
    a[0], a[1], a[2], a[3], a[11] = symbol, status, Decimal(amount), Decimal("100"), pid
    return a


def wallet(currency: str, balance: str, available: str | None) -> list[Any]:
    return [
        "exchange",
        currency,
        Decimal(balance),
        Decimal(0),
        None if available is None else Decimal(available),
        None,
        None,
    ]


def trade(tid: int, fee: str | None = None, cid: int | None = 77, short: bool = False) -> list[Any]:
    a: list[Any] = [tid, "tBTCUSD", MTS, 5, Decimal("0.5"), Decimal("100"), "EXCHANGE LIMIT"]
    a += [Decimal("100"), 1, None if fee is None else Decimal(fee), "USD" if fee else None, cid]
    return a[:11] if short else a


class Log:
    """Feeds events with increasing ids to one fold and keeps the last output."""

    def __init__(self, fold: Fold) -> None:
        self.fold = fold
        self.id = 0

    def __call__(self, kind: str, payload: Any = None) -> Output:
        self.id += 1
        out = Output()
        frame = {"event": kind} if kind == DISCONNECTED else [0, kind, payload]
        self.fold.apply(Event(self.id, kind, frame), out)
        return out


def test_registry_builds_only_what_is_asked() -> None:
    assert set(PROJECTION_NAMES) == set(FOLDS)
    assert [f.name for f in make_folds("wallets")] == ["wallets"]
    assert {f.name for f in make_folds()} == set(PROJECTION_NAMES)


def test_a_snapshot_replaces_the_open_set_and_closes_the_absent() -> None:
    fold = orders_fold()
    log = Log(fold)
    log("os", [order(1), order(2)])
    out = log("os", [order(2)])
    closed = out.upserts["orders"][(1,)]
    assert closed is not None and closed["is_open"] is False
    assert closed["order_status"] == "ACTIVE"  # the last known status text stays
    assert set(fold.open) == {(2,)}


def test_first_snapshot_is_not_reconciled_later_ones_are() -> None:
    fold = orders_fold()
    log = Log(fold)
    assert log("os", [order(1)]).reconciliations == []
    log("on", order(3))
    out = log("os", [order(1, amount="0.5"), order(2)])
    found = {(r.key, r.problem) for r in out.reconciliations}
    assert found == {("1", "changed"), ("2", "missing"), ("3", "unexpected")}
    changed = next(r for r in out.reconciliations if r.problem == "changed")
    assert changed.folded is not None and changed.folded["amount"] == "1"
    assert changed.snapshot is not None and changed.snapshot["amount"] == "0.5"


def test_update_for_an_unknown_order_creates_it_and_oc_keeps_its_final_status() -> None:
    fold = orders_fold()
    log = Log(fold)
    out = log("oc", order(9, amount="0", status="EXECUTED @ 100.0(1.0)"))
    row = out.upserts["orders"][(9,)]
    assert row is not None and row["is_open"] is False
    assert row["order_status"] == "EXECUTED @ 100.0(1.0)"
    assert fold.open == {}
    out = log("ou", order(10))
    assert out.upserts["orders"][(10,)]["is_open"] is True  # type: ignore[index]
    assert (10,) in fold.open


def test_a_position_absent_from_ps_is_closed_and_keys_fall_back_to_the_symbol() -> None:
    fold = positions_fold()
    log = Log(fold)
    log("ps", [position("tBTCUSD", 11), position("tETHUSD", None)])
    assert set(fold.open) == {("11",), ("sym:tETHUSD",)}
    out = log("ps", [position("tETHUSD", None)])
    closed = out.upserts["positions"][("11",)]
    assert closed is not None and closed["status"] == "CLOSED"
    # A pu with status CLOSED ends the position too.
    out = log("pu", position("tETHUSD", None, status="CLOSED"))
    assert out.upserts["positions"][("sym:tETHUSD",)]["status"] == "CLOSED"  # type: ignore[index]
    assert fold.open == {}


def test_a_wallet_absent_from_ws_is_removed_and_null_available_keeps_the_last() -> None:
    fold = wallets_fold()
    log = Log(fold)
    log("ws", [wallet("USD", "10", "10"), wallet("BTC", "1", "1")])
    out = log("wu", wallet("USD", "12", None))
    row = out.upserts["wallets"][("exchange", "USD")]
    assert row is not None and row["balance"] == Decimal("12")
    assert row["available_balance"] == Decimal("10")  # null means "not computed"
    out = log("ws", [wallet("USD", "12", "12")])
    assert out.upserts["wallets"][("exchange", "BTC")] is None  # deleted


def test_snapshot_records_seen_before_give_the_same_rows_as_converted_afresh() -> None:
    """A snapshot's records are converted once and reused while repeated: the rows (and
    what a later unknown value is merged from) are those of a fresh conversion."""

    def ws(*records: str) -> Any:
        return parse_frame('[0,"ws",[' + ",".join(records) + "]]")[2]

    fold, fresh = wallets_fold(), wallets_fold()
    log, fresh_log = Log(fold), Log(fresh)
    for kind, payload in [
        ("ws", ws('["exchange","USD",10.5,0,10.5,null,null]')),
        ("ws", ws('["exchange","USD",10.5,0,10.5,null,null]')),  # seen: the same row
        ("ws", ws('["exchange","USD",10.5,0,null,null,null]')),  # keeps 10.5 available
        ("wu", parse_frame('[0,"wu",["exchange","USD",12,0,7,null,null]]')[2]),
        ("ws", ws('["exchange","USD",10.5,0,null,null,null]')),  # seen: now keeps 7
        ("ws", ws('["exchange","USD",10.50,0,null,null,null]', '["exchange","BTC",1,0,1]')),
        # orjson writes NaN (parsed by the fallback parser) as null: still another record.
        ("ws", ws('["exchange","USD",10.5,0,null,NaN,null]')),
        ("ws", ws('["exchange","USD",10.5,0,null,null,null]')),
    ]:
        out = log(kind, payload)
        fresh._seen.clear()  # the same fold with nothing remembered
        assert out == fresh_log(kind, payload)
    row = fold.open[("exchange", "USD")]
    assert row["balance"] == Decimal("10.5") and row["available_balance"] == Decimal("7")
    assert fold.open == fresh.open


def test_disconnect_makes_stale_until_the_next_snapshot() -> None:
    fold = orders_fold()
    log = Log(fold)
    log("os", [])
    log(DISCONNECTED)
    assert fold.snapshot().stale
    log("on", order(1))
    assert fold.snapshot().stale
    log("os", [order(1)])
    assert fold.snapshot() == FoldFlags(stale=False, synced=True, skipped=0)


def test_unreadable_payloads_are_counted_not_raised() -> None:
    for name in PROJECTION_NAMES:
        fold = FOLDS[name]()
        for kind in sorted(fold.kinds - {DISCONNECTED}):
            for payload in ({"not": "a list"}, "text", None):
                fold.apply(Event(1, kind, [0, kind, payload]), Output())
            fold.apply(Event(2, kind, None), Output())  # the frame itself was unparseable
        assert fold.snapshot().skipped > 0, name


def test_tu_completes_te_te_after_tu_changes_nothing_short_tu_keeps_cid() -> None:
    fold = EVENT_FOLDS["trades"]()
    log = Log(fold)
    out = log("te", trade(1))
    assert out.inserts_if_absent["trades"][(1,)]["fee"] is None
    out = log("tu", trade(1, fee="-0.1", short=True))
    row = out.upserts["trades"][(1,)]
    assert row is not None and row["fee"] == Decimal("-0.1")
    assert row["cid"] is None  # the store keeps te's cid (coalesce); see test below
    # Within one batch the fold itself merges: te then short tu keeps cid.
    out = Output()
    fold.apply(Event(10, "te", [0, "te", trade(2)]), out)
    fold.apply(Event(11, "tu", [0, "tu", trade(2, fee="-0.2", short=True)]), out)
    merged = out.upserts["trades"][(2,)]
    assert merged is not None and merged["cid"] == 77 and merged["fee"] == Decimal("-0.2")
    # te after its tu: an insert-if-absent, never an overwrite.
    out = Output()
    fold.apply(Event(12, "tu", [0, "tu", trade(3, fee="-0.3")]), out)
    fold.apply(Event(13, "te", [0, "te", trade(3)]), out)
    assert out.upserts["trades"][(3,)]["fee"] == Decimal("-0.3")  # type: ignore[index]
    assert (3,) not in out.inserts_if_absent.get("trades", {})


def test_latest_values_are_keyed_as_documented() -> None:
    margin = EVENT_FOLDS["margin_info"]()
    out = Output()
    margin.apply(Event(1, "miu", parse_frame('[0,"miu",["base",[1,2,3,4,5]]]')), out)
    margin.apply(Event(2, "miu", parse_frame('[0,"miu",["sym","tBTCUSD",[1,2,3,4]]]')), out)
    assert set(out.upserts["margin_info"]) == {("base",), ("tBTCUSD",)}
    balance = EVENT_FOLDS["balance_info"]()
    out = Output()
    balance.apply(Event(3, "bu", parse_frame('[0,"bu",[1000.5,999.25]]')), out)
    assert out.upserts["balance_info"][()]["aum"] == Decimal("1000.5")  # type: ignore[index]
    funding = EVENT_FOLDS["funding_info"]()
    out = Output()
    funding.apply(Event(4, "fiu", parse_frame('[0,"fiu",["sym","fUSD",[0.1,0.2,3,4]]]')), out)
    assert set(out.upserts["funding_info"]) == {("fUSD",)}
    notes = EVENT_FOLDS["notifications"]()
    out = Output()
    notes.apply(
        Event(5, "n", parse_frame('[0,"n",[1,"on-req",null,null,[],null,"SUCCESS","ok"]]')), out
    )
    assert set(out.upserts["notifications"]) == {(5,)}


def test_restore_from_snapshot_equals_folding_through() -> None:
    """A fold restored from its own open rows and flags continues exactly like one that
    folded the whole prefix (the runner restores from the tables this way)."""
    events = [
        ("os", [order(1), order(2)]),
        ("on", order(3)),
        (DISCONNECTED, None),
        ("ou", order(2, amount="0.5")),
        ("os", [order(2, amount="0.5"), order(4)]),
        ("oc", order(4, amount="0", status="CANCELED")),
        ("os", [order(5)]),
    ]
    for cut in range(len(events)):
        through, restored = orders_fold(), orders_fold()
        log = Log(through)
        for kind, payload in events[:cut]:
            log(kind, payload)
        restored.restore(list(through.open.values()), through.snapshot(), log.id)
        other = Log(restored)
        other.id = log.id
        for kind, payload in events[cut:]:
            a, b = log(kind, payload), other(kind, payload)
            assert a == b, (cut, kind)
        assert through.open == restored.open and through.snapshot() == restored.snapshot()


def test_state_fold_snapshots_and_restores() -> None:
    fold = StateFold(every=3)
    log = Log(fold)
    log("os", [order(1)])
    log("ws", [wallet("USD", "1", "1")])
    out = log("ps", [position("tBTCUSD", 7)])
    row = out.upserts["state_snapshots"][(3,)]
    assert row is not None and row["event_id"] == 3
    again = StateFold()
    assert again.restore([row], FoldFlags(), 5) == 3  # then events 4..5 are folded again
    assert again.result() == fold.result()
    assert again.restore([], FoldFlags(), 5) == 0 and again.result()["orders"] == []


def test_amounts_keep_every_digit_of_the_frame() -> None:
    """The fast parse (orjson) is used only where a float holds the text exactly; a long
    amount, a fractional millisecond time or a huge integer take the exact parser."""
    from recorder.projections.values import to_decimal, to_int

    short = parse_frame('[0,"wu",["exchange","USD",30046.0,0,1e-8,"x",null]]')
    assert to_decimal(short[2][2]) == Decimal("30046.0")
    assert str(to_decimal(short[2][2])) == "30046.0" and to_decimal(short[2][4]) == Decimal("1e-8")
    long = parse_frame('[0,"wu",["exchange","USD",123456789.12345678,0,null,"x",null]]')
    assert to_decimal(long[2][2]) == Decimal("123456789.12345678")  # 17 digits, all kept
    fraction = parse_frame('[0,"te",[1,"tBTCUSD",1700000000000.123]]')
    assert to_decimal(fraction[2][2]) == Decimal("1700000000000.123")
    huge = parse_frame('[0,"n",[123456789012345678901234567890]]')
    assert to_int(huge[2][0]) == 123456789012345678901234567890
