"""The misbehaving REST host (tests/rest_faults.py) misbehaves as each mode says, and only so.

Each test serves one RestFault on loopback and talks to it with httpx (or a raw trio socket for
garbage and resets). A server task that crashed would leave its nursery with the exception, so
every test also checks that the server survived what the client did to it.
"""

from __future__ import annotations

import itertools
import json
import math
import socket
import struct
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import orjson
import pytest
import trio

from tests.rest_faults import RestFault

KEY = "fault-test-key"
RATELIMIT = ["error", 11010, "ratelimit: error"]
_nonces = itertools.count(1_700_000_000_000_000)


@asynccontextmanager
async def serving(fault: RestFault) -> AsyncIterator[httpx.AsyncClient]:
    """The fault served in a nursery of its own, and a client; the server is cancelled after."""
    async with trio.open_nursery() as nursery:
        port = await nursery.start(fault.serve)
        assert port == fault.port
        assert port > 0
        assert fault.url == f"http://127.0.0.1:{port}/v2"
        try:
            async with httpx.AsyncClient(timeout=5.0) as http:
                yield http
        finally:
            nursery.cancel_scope.cancel()


def signed_headers() -> dict[str, str]:
    return {
        "bfx-nonce": str(next(_nonces)),
        "bfx-apikey": KEY,
        "bfx-signature": "0" * 96,
        "content-type": "application/json",
    }


async def post(
    http: httpx.AsyncClient, fault: RestFault, path: str, body: bytes = b"{}"
) -> httpx.Response:
    return await http.post(f"{fault.url}/{path}", content=body, headers=signed_headers())


async def wait_for(condition: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    """Poll ``condition`` until it holds; fail after ``timeout`` seconds."""
    with trio.fail_after(timeout):
        while not condition():
            await trio.sleep(0.005)
    assert condition(), what


def is_rows(value: Any) -> bool:
    """The shape every auth/r list endpoint answers: a list of rows, each a list of two or
    more cells that starts with a number (an id or a timestamp), every number finite."""

    def cell_ok(cell: Any) -> bool:
        return (
            cell is None
            or isinstance(cell, str)
            or (isinstance(cell, int | float) and math.isfinite(cell))
        )

    return isinstance(value, list) and all(
        isinstance(row, list)
        and len(row) >= 2
        and isinstance(row[0], int | float)
        and all(cell_ok(cell) for cell in row)
        for row in value
    )


async def read_to_eof(stream: trio.SocketStream) -> bytes:
    got = b""
    while chunk := await stream.receive_some(65536):
        got += chunk
    return got


def http_request(path: str, body: bytes = b"{}") -> bytes:
    return (
        f"POST /v2/{path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    ).encode() + body


# --- closed ---------------------------------------------------------------------------------


async def test_closed_refuses_connections() -> None:
    fault = RestFault("closed")
    async with serving(fault) as http:
        with pytest.raises(httpx.ConnectError):
            await post(http, fault, "auth/r/wallets")
        with pytest.raises(OSError):
            await trio.open_tcp_stream("127.0.0.1", fault.port)
    assert fault.requests == []
    assert fault.connections == 0


# --- hang -----------------------------------------------------------------------------------


async def test_hang_accepts_and_never_answers() -> None:
    fault = RestFault("hang")
    async with serving(fault) as http:
        with trio.move_on_after(0.5) as scope:
            await post(http, fault, "auth/r/wallets")
        assert scope.cancelled_caught, "a hanging host answered"
        await wait_for(lambda: fault.connections >= 1, "the connection accepted")
        assert fault.connections == 1
        # It reads nothing, so no request is recorded.
        assert fault.requests == []

        # The socket stays open: no answer and no EOF (EOF would end receive_some with b"").
        stream = await trio.open_tcp_stream("127.0.0.1", fault.port)
        async with stream:
            await stream.send_all(http_request("auth/r/wallets"))
            received: list[bytes] = []
            with trio.move_on_after(0.3) as scope:
                received.append(await stream.receive_some(1))
            assert scope.cancelled_caught, f"the hanging host sent {received!r}"
        await wait_for(lambda: fault.connections >= 2, "the second connection")
        assert fault.connections == 2


# --- trickle --------------------------------------------------------------------------------


async def test_trickle_answers_slowly_and_only_a_total_deadline_bounds_it() -> None:
    every = 0.05
    fault = RestFault("trickle", trickle_every=every)
    async with serving(fault) as http:
        # A per-read timeout far longer than each pause never fires: the answer completes.
        began = trio.current_time()
        response = await http.post(
            f"{fault.url}/auth/r/wallets",
            content=b"{}",
            headers=signed_headers(),
            timeout=httpx.Timeout(5.0, read=1.0),
        )
        took = trio.current_time() - began
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        assert response.content == b"[]"
        assert orjson.loads(response.content) == []
        assert took >= 2 * every, took  # two bytes, a pause before each

        # Headers come at once; the body trickles past a 0.02 s total deadline.
        body: list[bytes] = []
        async with http.stream(
            "POST", f"{fault.url}/auth/r/wallets", content=b"{}", headers=signed_headers()
        ) as streamed:
            assert streamed.status_code == 200
            assert streamed.headers["content-length"] == "2"
            with pytest.raises(trio.TooSlowError):
                with trio.fail_after(0.02):
                    async for chunk in streamed.aiter_raw():
                        body.append(chunk)
        assert b"".join(body) != b"[]", "the whole body came before the deadline"

        # The whole request under the same deadline fails the same way.
        with pytest.raises(trio.TooSlowError):
            with trio.fail_after(0.02):
                await post(http, fault, "auth/r/wallets")

        # The server outlived the abandoned answers and still trickles out a whole one.
        again = await post(http, fault, "auth/r/movements", b'{"limit":1}')
        assert again.content == b"[]"
    assert [path for path, _ in fault.requests] == [
        "auth/r/wallets",
        "auth/r/wallets",
        "auth/r/wallets",
        "auth/r/movements",
    ]
    assert fault.requests[-1][1] == b'{"limit":1}'


# --- html502 --------------------------------------------------------------------------------


async def test_html502_is_a_proxy_page() -> None:
    fault = RestFault("html502")
    async with serving(fault) as http:
        for _ in range(2):
            response = await post(http, fault, "auth/r/wallets")
            assert response.status_code == 502
            assert response.headers["content-type"].startswith("text/html")
            assert response.text.startswith("<")
            assert "502" in response.text
            with pytest.raises(orjson.JSONDecodeError):
                orjson.loads(response.content)
    assert fault.connections == 1  # keep-alive: both on one connection
    assert len(fault.requests) == 2


# --- malformed ------------------------------------------------------------------------------


async def test_malformed_is_not_json() -> None:
    fault = RestFault("malformed")
    async with serving(fault) as http:
        response = await post(http, fault, "auth/r/wallets")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.content  # not empty: a body that starts like JSON and is not
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(response.content)
    with pytest.raises(json.JSONDecodeError):
        json.loads(response.content)


# --- shapes ---------------------------------------------------------------------------------


async def test_shapes_rotates_through_wrong_shapes() -> None:
    """Each answer is JSON of a shape no auth/r list endpoint has, a different one each
    request, round and round. Every one parses with orjson except ``[[1e400]]``: valid JSON
    text, but a number no double can hold, which orjson refuses (and Python's json reads as
    inf), so that one is checked with json instead."""
    fault = RestFault("shapes")
    async with serving(fault) as http:
        answers = [(await post(http, fault, "auth/r/wallets")).content for _ in range(7)]
    first_round = answers[:6]
    assert len(set(first_round)) == len(first_round), first_round  # successive answers differ
    assert answers[6] == answers[0]  # and they rotate
    for body in first_round:
        try:
            value = orjson.loads(body)
        except orjson.JSONDecodeError:
            value = json.loads(body)  # it is JSON text all the same
            assert any(
                isinstance(cell, float) and math.isinf(cell)
                for row in value
                if isinstance(row, list)
                for cell in row
            ), f"orjson refused {body!r}, which is not an out-of-range number"
        assert not is_rows(value), f"{body!r} has the right shape"
    unparsable = [b for b in first_round if _orjson_fails(b)]
    assert unparsable == [b"[[1e400]]"]
    assert fault.connections == 1
    assert len(fault.requests) == 7


def _orjson_fails(body: bytes) -> bool:
    try:
        orjson.loads(body)
    except orjson.JSONDecodeError:
        return True
    return False


def test_is_rows_recognises_the_right_shape() -> None:
    """The shape check above can fail: it accepts real rows."""
    assert is_rows([[1, 2.5, None, "USD"], [2, 3]])
    assert is_rows([])
    assert not is_rows([[1e400]])
    assert not is_rows({"a": 1})


# --- ratelimit ------------------------------------------------------------------------------


async def test_ratelimit_is_429_every_time() -> None:
    fault = RestFault("ratelimit")
    async with serving(fault) as http:
        for path in ("auth/r/permissions", "auth/r/wallets", "auth/r/wallets"):
            response = await post(http, fault, path)
            assert response.status_code == 429
            assert orjson.loads(response.content) == RATELIMIT
    assert len(fault.requests) == 3


# --- ok -------------------------------------------------------------------------------------


async def test_ok_answers_empty_lists_and_a_read_only_key() -> None:
    fault = RestFault("ok")
    async with serving(fault) as http:
        permissions = await post(http, fault, "auth/r/permissions")
        wallets = await post(http, fault, "auth/r/wallets", b'{"start":1,"limit":25}')
        trades = await post(http, fault, "auth/r/trades/hist", b"{}")
    assert permissions.status_code == 200
    granted = orjson.loads(permissions.content)
    scopes = {scope: (read, write) for scope, read, write in granted}
    assert scopes["account"] == (1, 0)
    assert scopes["orders"] == (1, 0)
    assert all(write == 0 for _, _, write in granted), granted  # read-only
    for response in (wallets, trades):
        assert response.status_code == 200
        assert orjson.loads(response.content) == []
    assert fault.requests == [
        ("auth/r/permissions", b"{}"),
        ("auth/r/wallets", b'{"start":1,"limit":25}'),
        ("auth/r/trades/hist", b"{}"),
    ]
    assert fault.connections == 1  # keep-alive: three requests, one connection


async def test_server_survives_garbage_resets_and_disconnects() -> None:
    fault = RestFault("ok")
    async with serving(fault) as http:
        # Garbage: the connection is closed, nothing recorded.
        stream = await trio.open_tcp_stream("127.0.0.1", fault.port)
        async with stream:
            await stream.send_all(b"\x16\x03\x01 not http at all\r\n\r\n")
            with trio.fail_after(5):
                await read_to_eof(stream)

        # A reset halfway through a request's headers.
        stream = await trio.open_tcp_stream("127.0.0.1", fault.port)
        await stream.send_all(b"POST /v2/auth/r/wallets HTTP/1.1\r\nhost: x\r\n")
        stream.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        await stream.aclose()

        # A clean disconnect after one answer on a raw connection.
        stream = await trio.open_tcp_stream("127.0.0.1", fault.port)
        async with stream:
            await stream.send_all(http_request("auth/r/permissions"))
            with trio.fail_after(5):
                head = await stream.receive_some(65536)
            assert head.startswith(b"HTTP/1.1 200 ")

        await wait_for(lambda: fault.connections >= 3, "three connections")
        response = await post(http, fault, "auth/r/wallets")
        assert response.status_code == 200
        assert orjson.loads(response.content) == []
    assert fault.connections == 4
    assert [path for path, _ in fault.requests] == ["auth/r/permissions", "auth/r/wallets"]
