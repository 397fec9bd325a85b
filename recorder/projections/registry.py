"""Every projection, by name (the name of its table) -> a factory of its fold."""

from __future__ import annotations

from collections.abc import Callable, Collection

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


Selection = str | Collection[str] | None  # one projection, several, or (None) every one


def selected(only: Selection) -> tuple[str, ...]:
    """The names ``only`` selects, in registry order (KeyError for an unknown name)."""
    if only is None:
        return PROJECTION_NAMES
    names = {only} if isinstance(only, str) else set(only)
    unknown = names - set(FOLDS)
    if unknown:
        raise KeyError(", ".join(sorted(unknown)))
    return tuple(n for n in PROJECTION_NAMES if n in names)


def make_folds(only: Selection = None) -> list[Fold]:
    """Fresh folds: every projection, or those named (KeyError if one is unknown)."""
    return [FOLDS[name]() for name in selected(only)]


def one_pass_folds(only: Selection) -> list[Fold]:
    """The folds of one pass; the state snapshots reuse the table folds when all of them
    are folded in the same pass."""
    folds = make_folds(only)
    shared = {f.name: f for f in folds if isinstance(f, CollectionFold)}
    has_state = any(isinstance(f, StateFold) for f in folds)
    if has_state and set(STATE_PROJECTIONS) <= set(shared):
        folds = [f for f in folds if not isinstance(f, StateFold)]
        # Last, so that the shared folds have applied each event before it is snapshotted.
        folds.append(StateFold(shared={n: shared[n] for n in STATE_PROJECTIONS}))
    return folds
