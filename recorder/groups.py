"""Exception groups as trio raises them: the plain exceptions inside, however nested."""

from __future__ import annotations


def leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions in ``exc`` (itself, when it is not a group)."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in leaves(inner)]
    return [exc]
