"""Sequence continuity per connection (protocol.md §5.3).

The public sequence must grow by exactly one per frame that carries it. The auth sequence
grows by one per account action; notifications (``n``) repeat it, 0 means "still syncing" and is
ignored. A checker lives for one connection: a new connection needs a new checker.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SeqProblem:
    counter: str  # "seq" (public) or "auth_seq"
    problem: str  # "gap", "repeat" or "backwards"
    expected: int
    got: int


class SequenceChecker:
    def __init__(self) -> None:
        self.last_seq: int | None = None
        self.last_auth_seq: int | None = None

    def check(self, kind: str, seq: int | None, auth_seq: int | None) -> list[SeqProblem]:
        problems: list[SeqProblem] = []
        if seq is not None:
            if self.last_seq is not None and seq != self.last_seq + 1:
                problems.append(_problem("seq", self.last_seq + 1, seq))
            # Re-anchor on what arrived, so one gap is reported once.
            if self.last_seq is None or seq > self.last_seq:
                self.last_seq = seq
        if auth_seq is not None and auth_seq != 0:
            last = self.last_auth_seq
            if last is not None:
                if auth_seq == last:
                    if kind != "n":
                        problems.append(SeqProblem("auth_seq", "repeat", last + 1, auth_seq))
                elif auth_seq != last + 1:
                    problems.append(_problem("auth_seq", last + 1, auth_seq))
            if last is None or auth_seq > last:
                self.last_auth_seq = auth_seq
        return problems


def _problem(counter: str, expected: int, got: int) -> SeqProblem:
    if got > expected:
        return SeqProblem(counter, "gap", expected, got)
    if got == expected - 1:
        return SeqProblem(counter, "repeat", expected, got)
    return SeqProblem(counter, "backwards", expected, got)
