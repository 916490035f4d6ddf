"""Providers on a :class:`~dofpy.trio.DofNode`: the :class:`Provider` base
class, dispatching a request to ``get_x``/``set_x``/method handlers, and
:func:`current_request`, which tells a handler who asks."""

from __future__ import annotations

import contextvars
import inspect
from collections.abc import Callable, Sequence
from typing import Any

from dofpy.oap.core import IncomingRequest, RequestKind
from dofpy.oap.errors import OapError, OapErrorCode
from dofpy.oap.interface import Interface, Method, Property

__all__ = ["Provider", "current_request"]

# The request a provider's handler task serves: each request runs in a task of
# its own, whose context (copied when trio spawns it) carries only its request.
current_request_var: contextvars.ContextVar[IncomingRequest] = contextvars.ContextVar(
    "dofpy_current_request"
)


def current_request() -> IncomingRequest:
    """The request the calling provider handler serves: its peer, object, item
    and values, and the requestor's authenticated ``identity`` and granted
    ``permissions`` (``None`` in the clear).

    A ``get_x``/``set_x``/method handler calls it to learn who is asking
    without overriding :meth:`Provider.handle`. Raises ``LookupError`` when
    called anywhere but in a handler a :class:`DofNode` runs.
    """
    try:
        return current_request_var.get()
    except LookupError:
        raise LookupError(
            "current_request() called outside a provider handler run by a DofNode"
        ) from None


class Provider:
    """Base class for object providers, dispatching by item name.

    For a property ``temp`` define ``get_temp(self)`` and, if writable,
    ``set_temp(self, value)``; for a method ``add`` define ``add(self, *args)``
    returning the result (one value, or a tuple when the method declares
    several results). Each may be a plain or an ``async`` function. Raise
    :class:`~dofpy.oap.errors.ProviderException` for a declared exception.
    :func:`current_request` tells a handler who asks (the requestor's
    authenticated identity and permissions). Override :meth:`handle` to
    dispatch in another way; :meth:`DofNode.provide` then no longer checks the
    handlers against the interface.
    """

    def missing_handlers(self, interface: Interface) -> list[str]:
        """The handlers :meth:`handle` would look for and not find when serving
        ``interface``: ``get_<p>`` for each readable property, ``set_<p>`` for
        each writable one, ``<m>`` for each method (an attribute that is not
        callable counts as missing). Empty when a subclass overrides
        :meth:`handle`, which then dispatches by itself."""
        if type(self).handle is not Provider.handle:
            return []
        wanted: list[str] = []
        for item in interface.items:
            if isinstance(item, Property):
                if item.readable:
                    wanted.append(f"get_{item.name}")
                if item.writable:
                    wanted.append(f"set_{item.name}")
            elif isinstance(item, Method):
                wanted.append(item.name)
        return [name for name in wanted if not callable(getattr(self, name, None))]

    async def handle(self, request: IncomingRequest) -> Sequence[Any]:
        """Serve one request; return the response values."""
        item = request.item
        if request.kind is RequestKind.GET:
            assert isinstance(item, Property)
            value = await call_handler(self._handler(f"get_{item.name}"))
            return (value,)
        if request.kind is RequestKind.SET:
            assert isinstance(item, Property)
            await call_handler(self._handler(f"set_{item.name}"), *request.values)
            return ()
        assert isinstance(item, Method)
        result = await call_handler(self._handler(item.name), *request.values)
        if len(item.results) == 0:
            return ()
        if len(item.results) == 1:
            return (result,)
        return tuple(result)

    def _handler(self, name: str) -> Callable[..., Any]:
        handler = getattr(self, name, None)
        if handler is None or not callable(handler):
            raise OapError(OapErrorCode.NOT_SUPPORTED, f"{type(self).__name__} has no {name}")
        result: Callable[..., Any] = handler
        return result


async def call_handler(function: Callable[..., Any], *args: Any) -> Any:
    result = function(*args)
    if inspect.isawaitable(result):
        return await result
    return result
