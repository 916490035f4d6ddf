"""OAP errors: how a provider refuses a request, and what the requestor raises.

An OAP Exception response has an ``internal`` flag. dofpy uses it to tell two
kinds of failure apart (a dofpy convention, see docs/protocol.md):

* ``internal=True``: the request failed at the protocol level; ``code`` is an
  :class:`OapErrorCode` (no such object, no such item, wrong value...). The
  requestor raises :class:`OapError`.
* ``internal=False``: the provider raised an exception that the interface
  declares; ``code`` is that :class:`~dofpy.oap.interface.ExceptionDef`'s item
  id and the values are its values. The requestor raises
  :class:`ProviderException`.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import Any

from dofpy.errors import RemoteProtocolError
from dofpy.oap.interface import ExceptionDef

__all__ = ["OapError", "OapErrorCode", "ProviderException"]


class OapErrorCode(enum.IntEnum):
    """Codes of protocol-level OAP Exceptions (``internal`` flag set)."""

    INTERNAL = 0  # the provider failed unexpectedly
    NOT_FOUND = 1  # no provider of this object and interface here
    NO_SUCH_ITEM = 2  # the interface has no such item
    NOT_SUPPORTED = 3  # the item does not allow this action (e.g. Set of read-only)
    INVALID_VALUE = 4  # the values do not fit the item's declaration
    PERMISSION_DENIED = 5  # the requestor may not do this
    BUSY = 6  # the provider is out of capacity; try later


class OapError(RemoteProtocolError):
    """The provider refused a request at the protocol level."""

    def __init__(self, code: int, message: str = "") -> None:
        try:
            name = OapErrorCode(code).name
        except ValueError:
            name = f"code {code}"
        super().__init__(message or f"OAP exception {name}", code)

    @property
    def error_code(self) -> OapErrorCode | int:
        assert self.code is not None
        try:
            return OapErrorCode(self.code)
        except ValueError:
            return self.code


class ProviderException(RemoteProtocolError):
    """An exception an interface declares, raised by a provider.

    Providers raise it to refuse a request with a declared exception; requestors
    receive it with the same ``definition`` and ``values``.
    """

    def __init__(self, definition: ExceptionDef, values: Sequence[Any] = ()) -> None:
        super().__init__(f"{definition.name}{tuple(values)!r}", definition.item_id)
        self.definition = definition
        self.values = tuple(values)
