"""REST answers are classified by status and body together (rest.md §2.1), and never raise."""

from __future__ import annotations

import pytest

from recorder.protocol.rest import API_ERROR, OK, RATE_LIMITED, UNAVAILABLE, read_answer

HTML_1015 = (
    b"<!DOCTYPE html><html><head><title>Access denied | api.bitfinex.com used Cloudflare to "
    b"restrict access</title></head><body>Error 1015 You are being rate limited</body></html>"
)

CASES = [
    # (what, http status, body, expected status, expected rows or code)
    ("rows", 200, b"[[1,2,3]]", OK, [[1, 2, 3]]),
    ("empty window", 200, b"[]", OK, []),
    ("ratelimit inside the data is data", 200, b'[[1,"USD",null,5,"ratelimit: error"]]', OK, None),
    ("404 [] is not an empty window", 404, b"[]", UNAVAILABLE, None),
    ("400 rows are not an answer", 400, b"[[1]]", UNAVAILABLE, None),
    ("api error under 500", 500, b'["error",10020,"limit: invalid"]', API_ERROR, 10020),
    ("rate limit code", 500, b'["error",11010,"ratelimit: error"]', RATE_LIMITED, None),
    ("rate limit object", 500, b'{"error":"ERR_RATE_LIMIT"}', RATE_LIMITED, None),
    ("rate limit message", 400, b'{"message":"Ratelimit"}', RATE_LIMITED, None),
    ("HTML 429 from a proxy", 429, HTML_1015, RATE_LIMITED, None),
    ("plain 429", 429, b"", RATE_LIMITED, None),
    ("HTML 502", 502, b"<html><body>502 Bad Gateway</body></html>", UNAVAILABLE, None),
    ("HTML 503 saying nothing of rate", 503, b"<html>busy</html>", UNAVAILABLE, None),
    ("malformed JSON", 200, b"[[1,2,", UNAVAILABLE, None),
    ("an object", 200, b'{"a":1}', UNAVAILABLE, None),
    ("a string", 200, b'"text"', UNAVAILABLE, None),
    ("not UTF-8", 200, b"\xff\xfe[", UNAVAILABLE, None),
    ("a number too large for a double", 200, b"[[1e400]]", UNAVAILABLE, None),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_answers_are_classified_by_status_and_body(case: tuple[object, ...]) -> None:
    _what, http_status, body, status, detail = case
    answer = read_answer(http_status, body)  # type: ignore[arg-type]
    assert answer.status == status, answer
    if status == OK and detail is not None:
        assert answer.rows == detail
    if status == API_ERROR:
        assert answer.code == detail
    if status == RATE_LIMITED:
        assert not answer.final


def test_huge_integers_are_read_without_error() -> None:
    """A 30-digit id is still an answer (stored verbatim; the fold deals with it)."""
    answer = read_answer(200, b"[[123456789012345678901234567890,1]]")
    assert answer.status == OK and len(answer.rows) == 1
