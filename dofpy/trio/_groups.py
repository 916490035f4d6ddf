"""Exceptions leave dofpy's context managers as themselves.

trio's nurseries wrap whatever escapes them in an ``ExceptionGroup``, even a
lone exception of the caller's own ``async with`` body; a node stacks several
nurseries, so ``except DofError`` around ``open_node()`` would never fire.
:func:`lone_exceptions_unwrapped` lets a group that holds exactly one
exception (at any depth of nesting) out as that exception, with its own
traceback, cause and context, as trio-websocket does; a group of several
real failures stays a group.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["lone_exception", "lone_exceptions_unwrapped"]


def lone_exception(error: BaseException) -> BaseException | None:
    """The one exception inside ``error``'s nested single-member groups, or
    ``None`` when some group holds more than one."""
    while isinstance(error, BaseExceptionGroup):
        if len(error.exceptions) != 1:
            return None
        error = error.exceptions[0]
    return error


@contextmanager
def lone_exceptions_unwrapped() -> Iterator[None]:
    """Re-raise a group of one exception as that exception."""
    try:
        yield
    except BaseExceptionGroup as group:
        lone = lone_exception(group)
        if lone is None:
            raise
        context, cause = lone.__context__, lone.__cause__
        try:
            raise lone
        finally:
            # ``raise`` inside ``except`` made the group the context: restore
            # what the exception carried, and drop the reference cycle.
            lone.__context__, lone.__cause__ = context, cause
            del lone, group
