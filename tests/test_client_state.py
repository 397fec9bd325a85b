"""The client side of the protocol as plain synchronous transcripts: no sockets, no trio."""

from __future__ import annotations

import orjson
import pytest

from recorder.protocol import classify
from recorder.protocol.client import (
    FORWARD,
    FORWARD_ONLY,
    Authenticated,
    AuthFailed,
    ClientState,
    End,
    KeyCanWrite,
    Mark,
    Notice,
    Send,
    SendAuth,
    SnapshotsIn,
)

INFO = '{"event":"info","version":2,"serverId":"x","platform":{"status":1}}'


def greeted() -> ClientState:
    client = ClientState()
    client.receive(classify(INFO))
    return client


def test_greeting_sends_conf_then_auth() -> None:
    client = ClientState()
    actions = client.receive(classify(INFO))
    assert actions[0] is FORWARD
    assert isinstance(actions[1], Send)
    assert orjson.loads(actions[1].text) == {"event": "conf", "flags": 65536}
    assert actions[2] == SendAuth()
    assert client.greeted


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ('[0,"hb"]', "error: first frame is not an info event"),
        ('{"event":"auth","status":"OK"}', "error: first frame is not an info event"),
        ('{"event":"info","version":1}', "error: unsupported API version 1"),
        ('{"event":"info"}', "error: unsupported API version None"),
        ("not json", "error: first frame is not an info event"),
    ],
)
def test_a_bad_greeting_ends_the_session(text: str, reason: str) -> None:
    client = ClientState()
    actions = client.receive(classify(text))
    assert actions == (FORWARD, End(reason))  # kept in the log, then the end
    assert not client.greeted


def test_auth_ok_reports_user_and_caps() -> None:
    client = greeted()
    caps = {"orders": {"read": 1, "write": 0}}
    frame = {"event": "auth", "status": "OK", "chanId": 0, "userId": 7, "caps": caps}
    actions = client.receive(classify(orjson.dumps(frame).decode()))
    assert actions == (FORWARD, Authenticated(7, caps))
    assert client.authenticated


@pytest.mark.parametrize(
    ("code", "final"),
    [(10100, True), (10111, True), (10112, True), (10113, True), (10114, False), (None, False)],
)
def test_auth_failure_is_final_only_for_codes_retrying_cannot_fix(
    code: int | None, final: bool
) -> None:
    client = greeted()
    frame = {"event": "auth", "status": "FAILED", "chanId": 0, "code": code, "msg": "nope"}
    actions = client.receive(classify(orjson.dumps(frame).decode()))
    assert actions == (
        FORWARD,
        AuthFailed("FAILED", code, "nope"),
        End("auth-failed", final=final),
    )
    assert not client.authenticated


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (20051, (End("info-20051", reconnect_now=True),)),
        (20060, (Notice("exchange maintenance started (20060)", {}),)),
        (20061, (End("info-20061", reconnect_now=True),)),
        (99999, ()),
    ],
)
def test_info_codes(code: int, expected: tuple[object, ...]) -> None:
    client = greeted()
    actions = client.receive(classify(orjson.dumps({"event": "info", "code": code}).decode()))
    assert actions == (FORWARD, *expected)


def test_a_later_info_with_another_version_ends_the_session() -> None:
    client = greeted()
    actions = client.receive(classify('{"event":"info","version":3}'))
    assert actions == (FORWARD, End("error: unsupported API version 3"))
    assert greeted().receive(classify('{"event":"info","version":2}')) == (FORWARD,)


def test_account_frames_are_only_forwarded() -> None:
    client = greeted()
    assert client.receive(classify('[0,"wu",["exchange","USD",1,0,1]]')) is FORWARD_ONLY
    assert client.receive(classify('[0,"hb"]')) is FORWARD_ONLY
    assert client.receive(classify('{"event":"pong","cid":1}')) is FORWARD_ONLY


def test_public_sequence_gap_marks_and_reconnects() -> None:
    client = greeted()
    assert client.receive(classify('[0,"hb",1]')) is FORWARD_ONLY
    assert client.receive(classify('[0,"wu",["exchange","USD",1,0,1],2,1]')) is FORWARD_ONLY
    actions = client.receive(classify('[0,"wu",["exchange","USD",2,0,2],5,2]'))
    assert actions == (
        FORWARD,
        Mark("seq-gap", {"counter": "seq", "problem": "gap", "expected": 3, "got": 5}),
        End("seq-gap", reconnect_now=True),
    )


def test_sequence_repeat_and_auth_gap_are_only_marked() -> None:
    client = greeted()
    client.receive(classify('[0,"wu",["exchange","USD",1,0,1],1,1]'))
    repeat = client.receive(classify('[0,"wu",["exchange","USD",1,0,1],1,2]'))
    assert repeat == (
        FORWARD,
        Mark("seq-gap", {"counter": "seq", "problem": "repeat", "expected": 2, "got": 1}),
    )
    auth_gap = client.receive(classify('[0,"wu",["exchange","USD",1,0,1],2,9]'))
    assert auth_gap == (
        FORWARD,
        Mark("seq-gap", {"counter": "auth_seq", "problem": "gap", "expected": 3, "got": 9}),
    )


def test_malformed_frames_are_kept_and_noticed() -> None:
    client = greeted()
    actions = client.receive(classify('[0,"on",{not json'))
    assert actions[0] is FORWARD
    assert isinstance(actions[1], Notice) and actions[1].message == "malformed frame kept"
    assert len(actions) == 2


def test_silence_pings_then_gives_up_unless_a_frame_arrives() -> None:
    client = greeted()
    first = client.silence()
    assert len(first) == 1 and isinstance(first[0], Send)
    assert orjson.loads(first[0].text) == {"event": "ping", "cid": 1}
    assert client.awaiting_pong
    # Any frame (here the pong) shows the connection is alive: the next silence pings again.
    client.receive(classify('{"event":"pong","cid":1}'))
    assert not client.awaiting_pong
    second = client.silence()
    assert isinstance(second[0], Send) and orjson.loads(second[0].text)["cid"] == 2
    assert client.silence() == (End("heartbeat-timeout"),)


def test_a_key_that_can_write_is_refused_unless_allowed() -> None:
    """The write-key policy is the protocol's: one rule, whatever the I/O layer."""
    caps = {"orders": {"read": 1, "write": 1}, "wallets": {"read": 1, "write": 0}}
    frame = orjson.dumps({"event": "auth", "status": "OK", "userId": 7, "caps": caps}).decode()
    refused = greeted().receive(classify(frame))
    assert refused == (
        FORWARD,
        Authenticated(7, caps, proceed=False),
        KeyCanWrite(("orders",), refused=True),
        End("error: key has write permissions (orders)", final=True),
    )
    allowing = ClientState(allow_write_key=True)
    allowing.receive(classify(INFO))
    assert allowing.receive(classify(frame)) == (
        FORWARD,
        Authenticated(7, caps),
        KeyCanWrite(("orders",), refused=False),
    )


def test_snapshots_in_once_every_snapshot_after_an_auth_arrived() -> None:
    client = greeted()
    client.receive(classify('{"event":"auth","status":"OK","userId":7}'))
    kinds = ["os", "ps", "ws", "fos", "fcs"]
    for kind in kinds:
        assert client.receive(classify(f'[0,"{kind}",[]]')) is FORWARD_ONLY
    assert client.receive(classify('[0,"hb"]')) is FORWARD_ONLY
    assert client.receive(classify('[0,"fls",[]]')) == (FORWARD, SnapshotsIn())
    assert client.receive(classify('[0,"os",[]]')) is FORWARD_ONLY  # once per auth


def test_snapshots_in_even_when_the_last_snapshot_has_a_sequence_problem() -> None:
    client = greeted()
    client.receive(classify('{"event":"auth","status":"OK","userId":7}'))
    for n, kind in enumerate(["os", "ps", "ws", "fos", "fcs"], start=1):
        client.receive(classify(f'[0,"{kind}",[],{n},{n}]'))
    actions = client.receive(classify('[0,"fls",[],9,6]'))  # public seq 6 expected
    assert actions[:2] == (FORWARD, SnapshotsIn())
    assert any(isinstance(a, Mark) for a in actions) and isinstance(actions[-1], End)
