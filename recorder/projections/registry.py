"""Every projection, by name (the name of its table) -> a factory of its fold."""

from __future__ import annotations

from collections.abc import Callable

from recorder.projections.base import Fold
from recorder.projections.collection import COLLECTION_FOLDS
from recorder.projections.events import EVENT_FOLDS
from recorder.projections.snapshots import StateFold

FOLDS: dict[str, Callable[[], Fold]] = {
    **COLLECTION_FOLDS,
    **EVENT_FOLDS,
    StateFold.name: StateFold,
}
PROJECTION_NAMES: tuple[str, ...] = tuple(FOLDS)


def make_folds(only: str | None = None) -> list[Fold]:
    """Fresh folds: every projection, or only the one named (KeyError if unknown)."""
    if only is not None:
        return [FOLDS[only]()]
    return [make() for make in FOLDS.values()]
