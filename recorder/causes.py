"""What is behind an exception: the exception, what caused it, what it interrupted, and the
members of an exception group, each once (a chain that loops back is walked once).

Two places ask: a failed handshake names the OS error behind trio-websocket's wrapper
(:func:`recorder.upstream.connection._cause`), and ``rebuild`` tells its own interruption
from an exception Python raised around it (:class:`recorder.commands.rebuild._Interrupt`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator


def behind(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` first, then breadth first: a group's members, then ``__cause__`` and
    ``__context__`` of each."""
    pending: deque[BaseException] = deque([exc])
    seen: set[int] = set()
    while pending:
        e = pending.popleft()
        if id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        if isinstance(e, BaseExceptionGroup):
            pending.extend(e.exceptions)
        pending.extend(n for n in (e.__cause__, e.__context__) if n is not None)
