"""Every projection, by name (the name of its table)."""

from __future__ import annotations

from recorder.projections.base import Fold
from recorder.projections.collection import make_collection_folds
from recorder.projections.events import make_event_folds


def make_folds(only: str | None = None) -> list[Fold]:
    from recorder.projections.state import StateFold

    folds: list[Fold] = [*make_collection_folds(), *make_event_folds(), StateFold()]
    if only is not None:
        folds = [f for f in folds if f.name == only]
        if not folds:
            raise KeyError(only)
    return folds


PROJECTION_NAMES: tuple[str, ...] = tuple(f.name for f in make_folds())
