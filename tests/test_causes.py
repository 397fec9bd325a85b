"""``recorder.causes.behind``: the walk behind an exception that the handshake's error text
and ``rebuild``'s interruption both rely on."""

from __future__ import annotations

from recorder.causes import behind
from recorder.upstream.connection import _cause


def test_walks_causes_contexts_and_group_members_breadth_first() -> None:
    root = OSError(111, "Connection refused")
    member = ValueError("member")
    member.__cause__ = root
    group = BaseExceptionGroup("group", [member, KeyError("k")])
    top = RuntimeError("top")
    top.__cause__ = group
    top.__context__ = TypeError("context")
    names = [type(e).__name__ for e in behind(top)]
    assert names == [
        "RuntimeError",
        "ExceptionGroup",  # (what BaseExceptionGroup makes of exceptions only)
        "TypeError",
        "ValueError",
        "KeyError",
        "ConnectionRefusedError",  # (what OSError makes of errno 111)
    ]
    assert _cause(top) == "Connection refused"  # the OS error, however deep


def test_a_chain_that_loops_back_is_walked_once() -> None:
    a, b = RuntimeError("a"), RuntimeError("b")
    a.__cause__ = b
    b.__cause__ = a
    assert [str(e) for e in behind(a)] == ["a", "b"]
    assert _cause(a) == "a"  # the first text, no OS error anywhere


def test_without_any_text_the_type_names_it() -> None:
    assert _cause(TimeoutError()) == "TimeoutError"
