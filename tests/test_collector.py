"""The collector's thresholds while the recorder moves data (recorder.collector)."""

from __future__ import annotations

import gc

import sqlalchemy as sa

from recorder.collector import YOUNG_THRESHOLD, fewer_collections
from recorder.projections.rebuild import rebuild
from recorder.store.eventlog import EventLog
from tests.helpers import ev


def test_fewer_collections_raises_the_first_threshold_and_puts_it_back() -> None:
    before = gc.get_threshold()
    with fewer_collections():
        inside = gc.get_threshold()
        with fewer_collections():
            assert gc.get_threshold() == inside
        assert gc.get_threshold() == inside
    assert inside == (max(before[0], YOUNG_THRESHOLD), *before[1:])
    assert inside != before
    assert gc.get_threshold() == before


def test_rebuild_folds_with_fewer_collections(engine: sa.Engine) -> None:
    log = EventLog(engine)
    log.append([ev("main", n) for n in range(1, 30)], {})
    before = gc.get_threshold()
    seen: list[tuple[int, int, int]] = []
    assert rebuild(engine, ["main"], progress=lambda n: seen.append(gc.get_threshold())) > 0
    assert seen and all(t[0] == max(before[0], YOUNG_THRESHOLD) for t in seen)
    assert gc.get_threshold() == before
