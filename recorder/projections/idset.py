"""A set of ids that a fold keeps for the life of an account, in 8 bytes per id.

Why: the fill effects' fold remembers every trade and ledger id it has used (REST answers
repeat rows the socket already gave, and must not make a fill's effects twice). In a Python
``set`` an integer id costs about 60 bytes (the int object and its share of the table): a
daemon folding one fill a second kept 2 GB a year of them, and a 5,000,000-frame benchmark
30 MB. Here 64-bit integers live in a sorted ``array('q')``; the latest few thousand in a
set until they are merged in (ids mostly grow, so a merge is usually an append); anything
else (a tuple key, an integer beyond 64 bits) in a plain set. Ids are compared with their type
(``1`` and ``1.0`` are different ids here), as the folds make them: integers from ``to_int``.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left
from collections.abc import Hashable
from itertools import chain

INT_MIN, INT_MAX = -(2**63), 2**63 - 1
MERGE_AT = 4096  # new ids kept in the set before they join the array


class IdSet:
    def __init__(self) -> None:
        self._sorted = array("q")
        self._recent: set[int] = set()
        self._other: set[Hashable] = set()

    def __len__(self) -> int:
        return len(self._sorted) + len(self._recent) + len(self._other)

    def __contains__(self, value: object) -> bool:
        if type(value) is int and INT_MIN <= value <= INT_MAX:
            if value in self._recent:
                return True
            ids = self._sorted
            i = bisect_left(ids, value)
            return i < len(ids) and ids[i] == value
        return value in self._other

    def add(self, value: Hashable) -> None:
        if type(value) is not int or not INT_MIN <= value <= INT_MAX:
            self._other.add(value)
        elif value not in self:
            self._recent.add(value)
            if len(self._recent) >= MERGE_AT:
                self._merge()

    def _merge(self) -> None:
        new = sorted(self._recent)
        ids = self._sorted
        # Only the tail from the first new id is merged (ids mostly grow: usually nothing,
        # and the new ids are appended).
        at = bisect_left(ids, new[0])
        tail = sorted(chain(ids[at:], new))
        del ids[at:]
        ids.extend(tail)
        self._recent = set()
