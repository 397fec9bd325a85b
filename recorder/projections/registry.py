"""Every projection, by name (the name of its table) -> a factory of its fold."""

from __future__ import annotations

from collections.abc import Callable

from recorder.projections.base import Fold
from recorder.projections.collection import COLLECTION_FOLDS, CollectionFold
from recorder.projections.events import EVENT_FOLDS
from recorder.projections.fills import FillEffectsFold
from recorder.projections.snapshots import STATE_PROJECTIONS, StateFold

FOLDS: dict[str, Callable[[], Fold]] = {
    **COLLECTION_FOLDS,
    **EVENT_FOLDS,
    FillEffectsFold.name: FillEffectsFold,
    StateFold.name: StateFold,
}
PROJECTION_NAMES: tuple[str, ...] = tuple(FOLDS)


def make_folds(only: str | None = None) -> list[Fold]:
    """Fresh folds: every projection, or only the one named (KeyError if unknown)."""
    if only is not None:
        return [FOLDS[only]()]
    return [make() for make in FOLDS.values()]


def one_pass_folds(only: str | None) -> list[Fold]:
    """The folds of a rebuild; the state snapshots reuse the table folds when all run."""
    folds = make_folds(only)
    shared = {f.name: f for f in folds if isinstance(f, CollectionFold)}
    if only is None and set(STATE_PROJECTIONS) <= set(shared):
        folds = [f for f in folds if not isinstance(f, StateFold)]
        # Last, so that the shared folds have applied each event before it is snapshotted.
        folds.append(StateFold(shared={n: shared[n] for n in STATE_PROJECTIONS}))
    return folds
