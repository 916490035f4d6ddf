"""One shape for the session layer's state machines: a ``(state, input) ->
state`` table whose missing entries are moves that must not happen."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Generic, TypeVar

from dofpy.errors import IllegalTransition

__all__ = ["TransitionTable"]

_State = TypeVar("_State")
_Input = TypeVar("_Input")


class TransitionTable(Generic[_State, _Input]):
    """``table.next(state, input)``: the state after ``input`` in ``state``;
    :class:`~dofpy.errors.IllegalTransition` when the table has no entry for the pair."""

    def __init__(self, name: str, entries: Mapping[tuple[_State, _Input], _State]) -> None:
        self.name = name
        self.entries: Mapping[tuple[_State, _Input], _State] = dict(entries)

    def next(self, state: _State, given: _Input) -> _State:
        try:
            return self.entries[(state, given)]
        except KeyError:
            raise IllegalTransition(f"{self.name}: no move for {given} in {state}") from None
