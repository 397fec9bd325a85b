"""The fold's compact id set answers as a set of the same ids does."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from recorder.projections import idset
from recorder.projections.idset import IdSet

IDS = st.integers(-(2**64), 2**64) | st.tuples(st.just("funding"), st.integers(0, 50))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.booleans(), IDS), max_size=300))
def test_idset_is_a_set_of_its_ids(steps: list[tuple[bool, object]]) -> None:
    idset.MERGE_AT, saved = 7, idset.MERGE_AT  # merge often: appends and out-of-order merges
    try:
        ids, plain = IdSet(), set()
        for add, value in steps:
            if add:
                ids.add(value)  # type: ignore[arg-type]
                plain.add(value)
            assert (value in ids) == (value in plain)
        assert len(ids) == len(plain)
        assert all(v in ids for v in plain)
    finally:
        idset.MERGE_AT = saved


def test_ids_growing_in_order_take_8_bytes_each() -> None:
    ids = IdSet()
    for trade_id in range(10**9, 10**9 + 100_000):
        ids.add(trade_id)
    assert len(ids) == 100_000
    assert 10**9 + 99_999 in ids and 10**9 + 100_000 not in ids
    assert len(ids._sorted) >= 100_000 - idset.MERGE_AT  # in the array, not the set
    assert ids._sorted.itemsize == 8
