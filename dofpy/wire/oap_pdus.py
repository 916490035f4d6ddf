"""The OAP PDUs: one frozen class per command and response, each checking
its fields on construction (``ValueError`` for what the wire cannot carry).

Encoded and decoded by :mod:`dofpy.wire.oap`, which documents the layouts and
re-exports every public name here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, TypeAlias

from dofpy.wire.oap_fields import (
    Alias,
    Binding,
    CommandControl,
    OapOpcode,
    Target,
    _check_c2,
    _check_target,
    _check_u16,
    _normalise_values,
)
from dofpy.wire.oid import IID, OID

__all__ = [
    "ActivateCommand",
    "AdvertiseCommand",
    "ChangeCommand",
    "ConnectCommand",
    "DefineCommand",
    "DefineResponse",
    "ExceptionResponse",
    "FullConnectCommand",
    "GetCommand",
    "GetResponse",
    "InvokeCommand",
    "InvokeResponse",
    "OapPdu",
    "OpenCommand",
    "OpenResponse",
    "ProvideCommand",
    "RegisterCommand",
    "RegisterResponse",
    "SetCommand",
    "SetResponse",
    "SignalCommand",
    "SubscribeCommand",
    "SubscribeResponse",
    "WatchCommand",
]


@dataclass(frozen=True, slots=True)
class GetCommand:
    """Read property ``item_id`` of the target; answered by a GetResponse."""

    OPCODE: ClassVar[OapOpcode] = OapOpcode.GET
    IS_RESPONSE: ClassVar[bool] = False

    item_id: int
    target: Target
    command_control: CommandControl | None = None

    def __post_init__(self) -> None:
        _check_c2(self.item_id, "item id")
        _check_target(self.target)


@dataclass(frozen=True, slots=True)
class SetCommand:
    """Write property ``item_id`` of the target; answered by a SetResponse."""

    OPCODE: ClassVar[OapOpcode] = OapOpcode.SET
    IS_RESPONSE: ClassVar[bool] = False

    item_id: int
    target: Target
    values: tuple[object, ...] = ()
    command_control: CommandControl | None = None

    def __post_init__(self) -> None:
        _check_c2(self.item_id, "item id")
        _check_target(self.target)
        _normalise_values(self, self.values)


@dataclass(frozen=True, slots=True)
class InvokeCommand:
    """Call method ``item_id`` of the target with ``values`` as arguments;
    answered by an InvokeResponse carrying the results."""

    OPCODE: ClassVar[OapOpcode] = OapOpcode.INVOKE
    IS_RESPONSE: ClassVar[bool] = False

    item_id: int
    target: Target
    values: tuple[object, ...] = ()
    command_control: CommandControl | None = None

    def __post_init__(self) -> None:
        _check_c2(self.item_id, "item id")
        _check_target(self.target)
        _normalise_values(self, self.values)


@dataclass(frozen=True, slots=True)
class SubscribeCommand:
    """Ask to be told of changes of property ``item_id`` (by Change commands),
    at most once per ``minimum_delta`` (c2; the dissector names no unit)."""

    OPCODE: ClassVar[OapOpcode] = OapOpcode.SUBSCRIBE
    IS_RESPONSE: ClassVar[bool] = False

    item_id: int
    target: Target
    minimum_delta: int = 0
    command_control: CommandControl | None = None

    def __post_init__(self) -> None:
        _check_c2(self.item_id, "item id")
        _check_target(self.target)
        _check_c2(self.minimum_delta, "minimum delta")


@dataclass(frozen=True, slots=True)
class RegisterCommand:
    """Ask to receive event ``item_id`` of the target (by Signal commands)."""

    OPCODE: ClassVar[OapOpcode] = OapOpcode.REGISTER
    IS_RESPONSE: ClassVar[bool] = False

    item_id: int
    target: Target
    command_control: CommandControl | None = None

    def __post_init__(self) -> None:
        _check_c2(self.item_id, "item id")
        _check_target(self.target)


@dataclass(frozen=True, slots=True)
class _TargetOnlyCommand:
    """Shared shape of Watch, Activate, Connect and Full Connect."""

    OPCODE: ClassVar[OapOpcode]
    IS_RESPONSE: ClassVar[bool] = False

    target: Target
    command_control: CommandControl | None = None

    def __post_init__(self) -> None:
        _check_target(self.target)


@dataclass(frozen=True, slots=True)
class WatchCommand(_TargetOnlyCommand):
    """Watch for providers of the target binding."""

    OPCODE: ClassVar[OapOpcode] = OapOpcode.WATCH


@dataclass(frozen=True, slots=True)
class ActivateCommand(_TargetOnlyCommand):
    """Ask providers of the target binding to become active."""

    OPCODE: ClassVar[OapOpcode] = OapOpcode.ACTIVATE


@dataclass(frozen=True, slots=True)
class ConnectCommand(_TargetOnlyCommand):
    """Connect to the target binding."""

    OPCODE: ClassVar[OapOpcode] = OapOpcode.CONNECT


@dataclass(frozen=True, slots=True)
class FullConnectCommand(_TargetOnlyCommand):
    """Full Connect to the target binding."""

    OPCODE: ClassVar[OapOpcode] = OapOpcode.FULL_CONNECT


@dataclass(frozen=True, slots=True)
class AdvertiseCommand:
    """Announce that this node provides ``binding``.

    No command control: the dissector misreads it on Advertise, so dofpy
    never sends it (and refuses it on input).
    """

    OPCODE: ClassVar[OapOpcode] = OapOpcode.ADVERTISE
    IS_RESPONSE: ClassVar[bool] = False

    binding: Binding

    def __post_init__(self) -> None:
        if not isinstance(self.binding, Binding):
            raise ValueError("Advertise needs a Binding")


@dataclass(frozen=True, slots=True)
class ProvideCommand:
    """Provide ``binding`` and define ``alias`` for it in this session; later
    commands in the session may address the binding by the alias."""

    OPCODE: ClassVar[OapOpcode] = OapOpcode.PROVIDE
    IS_RESPONSE: ClassVar[bool] = False

    alias: Alias
    binding: Binding

    def __post_init__(self) -> None:
        if not isinstance(self.alias, Alias):
            raise ValueError("Provide needs an Alias (the dissector requires one)")
        if not isinstance(self.binding, Binding):
            raise ValueError("Provide needs a Binding")


@dataclass(frozen=True, slots=True)
class OpenCommand:
    """Open: a target, then an interface and an object id; answered by an
    OpenResponse."""

    OPCODE: ClassVar[OapOpcode] = OapOpcode.OPEN
    IS_RESPONSE: ClassVar[bool] = False

    target: Target
    interface: IID
    object_id: OID

    def __post_init__(self) -> None:
        _check_target(self.target)


@dataclass(frozen=True, slots=True)
class _SequencedCommand:
    """Shared shape of Change and Signal."""

    OPCODE: ClassVar[OapOpcode]
    IS_RESPONSE: ClassVar[bool] = False

    item_id: int
    target: Target
    sequence: int
    values: tuple[object, ...] = ()

    def __post_init__(self) -> None:
        _check_c2(self.item_id, "item id")
        _check_target(self.target)
        _check_u16(self.sequence, "sequence")
        _normalise_values(self, self.values)


@dataclass(frozen=True, slots=True)
class ChangeCommand(_SequencedCommand):
    """Tell a subscriber the new value of property ``item_id``."""

    OPCODE: ClassVar[OapOpcode] = OapOpcode.CHANGE


@dataclass(frozen=True, slots=True)
class SignalCommand(_SequencedCommand):
    """Deliver an occurrence of event ``item_id`` to a registrant."""

    OPCODE: ClassVar[OapOpcode] = OapOpcode.SIGNAL


@dataclass(frozen=True, slots=True)
class DefineCommand:
    """Define: the opcode byte alone; answered by a DefineResponse."""

    OPCODE: ClassVar[OapOpcode] = OapOpcode.DEFINE
    IS_RESPONSE: ClassVar[bool] = False


# -- responses -----------------------------------------------------------------


def _check_provider(provider: object) -> None:
    if provider is not None and not isinstance(provider, OID):
        raise ValueError("provider must be an OID or None")


@dataclass(frozen=True, slots=True)
class GetResponse:
    """The value of a property; ``provider`` names the answering provider."""

    OPCODE: ClassVar[OapOpcode] = OapOpcode.GET
    IS_RESPONSE: ClassVar[bool] = True

    values: tuple[object, ...] = ()
    provider: OID | None = None

    def __post_init__(self) -> None:
        _check_provider(self.provider)
        _normalise_values(self, self.values)


@dataclass(frozen=True, slots=True)
class InvokeResponse:
    """The results of a method call."""

    OPCODE: ClassVar[OapOpcode] = OapOpcode.INVOKE
    IS_RESPONSE: ClassVar[bool] = True

    values: tuple[object, ...] = ()
    provider: OID | None = None

    def __post_init__(self) -> None:
        _check_provider(self.provider)
        _normalise_values(self, self.values)


@dataclass(frozen=True, slots=True)
class SetResponse:
    """A property was written."""

    OPCODE: ClassVar[OapOpcode] = OapOpcode.SET
    IS_RESPONSE: ClassVar[bool] = True

    provider: OID | None = None

    def __post_init__(self) -> None:
        _check_provider(self.provider)


@dataclass(frozen=True, slots=True)
class SubscribeResponse:
    """A subscription was accepted."""

    OPCODE: ClassVar[OapOpcode] = OapOpcode.SUBSCRIBE
    IS_RESPONSE: ClassVar[bool] = True

    provider: OID | None = None

    def __post_init__(self) -> None:
        _check_provider(self.provider)


@dataclass(frozen=True, slots=True)
class RegisterResponse:
    """A registration was accepted; ``sequence`` is the event's current update
    sequence (u16), which later Signal commands continue."""

    OPCODE: ClassVar[OapOpcode] = OapOpcode.REGISTER
    IS_RESPONSE: ClassVar[bool] = True

    sequence: int
    provider: OID | None = None

    def __post_init__(self) -> None:
        _check_u16(self.sequence, "sequence")
        _check_provider(self.provider)


@dataclass(frozen=True, slots=True)
class ExceptionResponse:
    """A command failed: exception ``code`` (c2) and detail ``values``.

    ``internal``: the failure is inside the provider; ``final``: no further
    response follows for this operation; ``provider`` names the provider.
    The dissector (tshark 4.0) shows the flags but does not parse the
    provider OID of an Exception: it treats those bytes as the code.
    """

    OPCODE: ClassVar[OapOpcode] = OapOpcode.EXCEPTION
    IS_RESPONSE: ClassVar[bool] = True

    code: int
    values: tuple[object, ...] = ()
    internal: bool = False
    final: bool = True
    provider: OID | None = None

    def __post_init__(self) -> None:
        _check_c2(self.code, "exception code")
        _check_provider(self.provider)
        _normalise_values(self, self.values)


@dataclass(frozen=True, slots=True)
class DefineResponse:
    """Answer to Define: the opcode byte alone."""

    OPCODE: ClassVar[OapOpcode] = OapOpcode.DEFINE
    IS_RESPONSE: ClassVar[bool] = True


@dataclass(frozen=True, slots=True)
class OpenResponse:
    """Answer to Open: the opcode byte alone."""

    OPCODE: ClassVar[OapOpcode] = OapOpcode.OPEN
    IS_RESPONSE: ClassVar[bool] = True


OapPdu: TypeAlias = (
    GetCommand
    | SetCommand
    | InvokeCommand
    | SubscribeCommand
    | RegisterCommand
    | WatchCommand
    | ActivateCommand
    | ConnectCommand
    | FullConnectCommand
    | AdvertiseCommand
    | ProvideCommand
    | OpenCommand
    | ChangeCommand
    | SignalCommand
    | DefineCommand
    | GetResponse
    | InvokeResponse
    | SetResponse
    | SubscribeResponse
    | RegisterResponse
    | ExceptionResponse
    | DefineResponse
    | OpenResponse
)
"""Every OAP PDU dofpy encodes and decodes."""
