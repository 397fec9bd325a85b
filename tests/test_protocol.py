from __future__ import annotations

import hashlib
import hmac
import json

import orjson
from hypothesis import given
from hypothesis import strategies as st

from recorder.protocol import (
    MALFORMED,
    MAX_NONCE,
    NonceExhausted,
    NonceSource,
    SequenceChecker,
    auth_message,
    auth_payload,
    classify,
    conf_message,
    layouts,
    ping_message,
    sign,
)

SECRET = "fixed-secret-for-the-test"
NONCE = 1_700_000_000_000_000


def test_signature_matches_documented_formula() -> None:
    # protocol.md §2.1: payload = "AUTH" + str(nonce); sig = hex(HMAC-SHA384(secret, payload))
    payload = "AUTH" + str(NONCE)
    expected = hmac.new(SECRET.encode(), payload.encode(), hashlib.sha384).hexdigest()
    assert auth_payload(NONCE) == payload
    assert sign(SECRET, payload) == expected
    assert len(expected) == 96


def test_auth_message_fields() -> None:
    msg = json.loads(auth_message("the-key", SECRET, NONCE))
    assert msg == {
        "event": "auth",
        "apiKey": "the-key",
        "authNonce": NONCE,
        "authPayload": f"AUTH{NONCE}",
        "authSig": sign(SECRET, f"AUTH{NONCE}"),
    }
    assert "dms" not in msg and "filter" not in msg
    with_opts = json.loads(auth_message("k", SECRET, NONCE, filter=["trading"], dms=True))
    assert with_opts["filter"] == ["trading"] and with_opts["dms"] == 4
    assert json.loads(conf_message()) == {"event": "conf", "flags": 65536}
    assert json.loads(ping_message(7)) == {"event": "ping", "cid": 7}


def test_nonce_strictly_increasing_when_clock_steps_back() -> None:
    times = iter([100.0, 100.0, 99.0, 50.0, 101.0])
    src = NonceSource(clock=lambda: next(times))
    got = [src.next() for _ in range(5)]
    assert got == sorted(set(got))
    assert got[0] == 100_000_000
    assert got[4] == 101_000_000


def test_nonce_starts_above_last_used_and_caps() -> None:
    src = NonceSource(clock=lambda: 1.0, last_used=5_000_000_000)
    assert src.next() == 5_000_000_001
    src.observe(10)  # lower observations never move it back
    assert src.next() == 5_000_000_002
    capped = NonceSource(clock=lambda: 1.0, last_used=MAX_NONCE)
    try:
        capped.next()
    except NonceExhausted:
        pass
    else:
        raise AssertionError("expected NonceExhausted")


def test_classify_events_and_heartbeat() -> None:
    info = classify('{"event":"info","version":2,"platform":{"status":1}}')
    assert (info.kind, info.chan_id, info.payload["version"]) == ("info", None, 2)
    auth = classify('{"event":"auth","status":"FAILED","chanId":0,"code":10114}')
    assert auth.kind == "auth" and auth.chan_id is None
    hb = classify('[0,"hb"]')
    assert (hb.kind, hb.chan_id, hb.seq, hb.auth_seq) == ("hb", 0, None, None)
    hb_seq = classify('[0,"hb",17]')
    assert (hb_seq.kind, hb_seq.seq, hb_seq.auth_seq) == ("hb", 17, None)


def test_classify_every_account_message_type() -> None:
    for abbr, mtype in layouts.MESSAGE_TYPES.items():
        record = mtype.layout.array({})
        payload = [record] if abbr.endswith("s") and abbr != "fls" else record
        frame = classify(orjson.dumps([0, abbr, payload]).decode())
        assert frame.kind == abbr, abbr
        assert frame.chan_id == 0
        assert frame.payload == payload
        assert (frame.seq, frame.auth_seq) == (None, None)
        seq_frame = classify(orjson.dumps([0, abbr, payload, 41, 12]).decode())
        assert (seq_frame.kind, seq_frame.seq, seq_frame.auth_seq) == (abbr, 41, 12)
    # A single trailing number on a data frame is the auth sequence (protocol.md §5.3 step 5).
    note = classify('[0,"n",[1,"on-req",null,null,[],null,"ERROR","x"],9]')
    assert (note.kind, note.seq, note.auth_seq) == ("n", None, 9)


def test_classify_real_frames_from_protocol_md() -> None:
    te = classify(
        '[0,"te",[25210868,"tBTCUSD",1588241444015.25,1187242129,0.001,8360.8,'
        '"EXCHANGE MARKET",8360.8,-1,null,null,1588241444012]]'
    )
    assert te.kind == "te"
    assert layouts.TRADE.record(te.payload)["order_id"] == 1187242129
    tu11 = classify(
        '[0,"tu",[25210868,"tBTCUSD",1588241444015,1187242129,0.001,8360.8,'
        '"EXCHANGE MARKET",8360.8,-1,-0.000002,"BTC"]]'
    )
    rec = layouts.TRADE.record(tu11.payload)  # 11-element tu: cid missing, not an error
    assert rec["fee"] == -0.000002 and rec["cid"] is None


def test_classify_malformed_inputs() -> None:
    cases = {
        "not json": "invalid JSON",
        "42": "expected a list or an object",
        '"hb"': "expected a list or an object",
        "[0]": "shorter",
        '["x","hb"]': "channel id",
        "[0,5,[]]": "message type",
        '[0,"on"]': "without a payload",
        '[0,"on",[],"x"]': "trailing",
        '{"no":"event"}': "event",
        '[0,"on",[1,2': "invalid JSON",
    }
    for text, reason in cases.items():
        frame = classify(text)
        assert frame.kind == MALFORMED, text
        assert reason in (frame.reason or ""), (text, frame.reason)
        assert frame.text == text


@given(st.text())
def test_classify_never_raises_on_text(text: str) -> None:
    frame = classify(text)
    assert frame.text == text
    assert isinstance(frame.kind, str)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=20,
)


@given(_json)
def test_classify_never_raises_on_json(value: object) -> None:
    text = json.dumps(value)
    frame = classify(text)
    assert frame.text == text
    if not isinstance(value, (list, dict)):
        assert frame.kind == MALFORMED
    elif frame.kind != MALFORMED:
        assert frame.chan_id is not None or isinstance(value, dict)


@given(st.binary())
def test_classify_never_raises_on_bytes(data: bytes) -> None:
    assert isinstance(classify(data).kind, str)


def test_sequence_checker_reports_gaps_and_repeats() -> None:
    chk = SequenceChecker()
    assert chk.check("ps", 1, 1) == []
    assert chk.check("hb", 2, None) == []
    assert chk.check("n", 3, 1) == []  # notifications repeat the auth sequence
    assert chk.check("on", 4, 2) == []
    gap = chk.check("ou", 6, 3)
    assert [(p.counter, p.problem, p.expected, p.got) for p in gap] == [("seq", "gap", 5, 6)]
    assert chk.check("oc", 7, 4) == []  # re-anchored: one gap reported once
    repeat = chk.check("te", 7, 5)
    assert [(p.counter, p.problem) for p in repeat] == [("seq", "repeat")]
    auth_gap = chk.check("tu", 8, 9)
    assert [(p.counter, p.problem, p.expected) for p in auth_gap] == [("auth_seq", "gap", 6)]
    auth_repeat = chk.check("wu", 9, 9)
    assert [(p.counter, p.problem) for p in auth_repeat] == [("auth_seq", "repeat")]
    assert chk.check("wu", 10, 0) == []  # 0: still syncing, ignored


def test_layout_record_tolerates_short_and_long_arrays() -> None:
    short = [1, None, 2, "tBTCUSD"]
    rec = layouts.ORDER.record(short)
    assert rec["id"] == 1 and rec["symbol"] == "tBTCUSD" and rec["meta"] is None
    long = [*layouts.WALLET.array({"wallet_type": "exchange", "currency": "USD"}), "future"]
    assert layouts.WALLET.record(long)["currency"] == "USD"
    assert len(layouts.ORDER.array({})) == 32
    assert len(layouts.POSITION.array({})) == 20


def test_auth_checker_codes() -> None:
    from recorder.protocol.exchange import AuthChecker

    chk = AuthChecker({"k": SECRET})

    def req(key: str = "k", secret: str = SECRET, nonce: object = NONCE) -> dict[str, object]:
        return json.loads(auth_message(key, secret, 1)) | {
            "authNonce": nonce,
            "authPayload": f"AUTH{nonce}",
            "authSig": sign(secret, f"AUTH{nonce}"),
        }

    assert chk.check(req(key="nope")) == (10100, "apikey: invalid")
    assert chk.check(req(secret="wrong")) == (10100, "apikey: digest invalid")
    assert chk.check(req() | {"authPayload": "X"}) == (10111, "payload: invalid")
    assert chk.check(req()) is None
    assert chk.check(req()) == (10114, "nonce: small")  # the same nonce again
    assert chk.check(req(nonce=str(NONCE + 1))) is None  # a numeric string is accepted
    assert chk.check(req(nonce=MAX_NONCE + 1)) == (10114, "nonce: too big")
