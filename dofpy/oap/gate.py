"""The gate of an OAP core: every incoming OAP command passes it first.

It checks permissions (one function, :meth:`Gate.admits`, for the
decoded-event path and the raw path alike) and hands commands for an
intercepted interface to their interceptor instead of the provider path.
Permissions come first, for every request (intercepted ones too): a
requestor that may not touch an object does not learn whether it exists, nor
reach a protocol built on OAP such as the block transfer.

A Subscribe or Register must also come from an identity the object's
provider admits as a subscriber (:meth:`Gate.admits_subscriber`: an object
provided for some subscribers only): else it is refused as though the object
were not provided (``NOT_FOUND``, the provider path's words), on both paths
and before any interceptor, so that who may hear an object's notifications
rests on the session's identity and not on the object's name being secret.

The raw path reads a command only up to its target (a transfer's datagrams
repeat one head, so the last head read is kept: the OAP layer's one head
cache) and the last permission check passed is remembered the same way.
With the node's ``fast_paths`` off (:class:`~dofpy.session.config.NodeConfig`)
there is neither: every command is decoded in full and handed to the
interceptor's decoded form, every permission evaluated: the reference the
fast paths are compared with (the same events, statistics and datagrams).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

from dofpy._core import Address
from dofpy.errors import BadPacket, LocalProtocolError
from dofpy.oap.context import NO_SUCH_OBJECT, OapContext
from dofpy.oap.errors import OapErrorCode
from dofpy.oap.events import AccessDenied
from dofpy.security.permissions import is_allowed
from dofpy.session.node import CommandReceived
from dofpy.wire.dpp import AppId
from dofpy.wire.oap import (
    Alias,
    Binding,
    CommandHead,
    GetCommand,
    InvokeCommand,
    OapOpcode,
    OapPdu,
    ProvideCommand,
    RegisterCommand,
    SetCommand,
    SubscribeCommand,
    decode_oap_untrusted,
    probe_command_head_untrusted,
)
from dofpy.wire.oid import IID, OID
from dofpy.wire.permissions import Action, PermissionSet

__all__ = ["DeniedHandler", "Gate", "Interceptor", "RawInterceptor"]

# Read for every one-way command: a module constant (reading a member off its
# Enum class goes through the metaclass's attribute hook on Python 3.11).
_OAP = AppId.OAP

Interceptor = Callable[[Address, OID | None, int | None, OapPdu, float], None]
"""Takes every OAP command addressed (by full binding) to one interface:
``(peer, identity, op_count, pdu, now)``, ``identity`` the authenticated
identity of the secure session it came through (None in the clear).
Protocols built on OAP messages with their own recovery (the block transfer)
use it instead of the request/response path."""

RawInterceptor = Callable[[Address, OID | None, int | None, CommandHead, bytes, float], None]
"""The fast form of an :data:`Interceptor`: ``(peer, identity, op_count, head,
payload, now)`` with the OAP payload only read up to its target (``head``); the
interceptor decodes and checks the rest itself, raising only ``BadPacket``.
While consecutive payloads repeat the same head bytes, ``head`` is the very
same object (the gate's head cache), so an interceptor may key a cache of
its own on ``head`` by identity."""

DeniedHandler = Callable[[Address, int | None, Binding, float], None]
"""Told of an intercepted command refused for want of permission: ``(peer,
op_count, binding, now)``. It answers in the intercepted protocol's own terms
(the OAP Exception response is then not sent: a one-way command has no
requestor waiting for one)."""


@dataclass(frozen=True, slots=True)
class _Interception:
    handler: Interceptor
    raw: RawInterceptor | None
    on_denied: DeniedHandler | None


class _CachedHead(NamedTuple):
    """The last raw-routed command head: its bytes, the head read from them
    and the interception it goes to."""

    head_bytes: bytes
    head: CommandHead
    interception: _Interception


class _AllowedCheck(NamedTuple):
    """The last permission check passed."""

    permissions: PermissionSet
    action: Action
    binding: Binding


_ACTIONS: dict[type, Action] = {
    GetCommand: Action.READ,
    SetCommand: Action.WRITE,
    InvokeCommand: Action.EXECUTE,
    SubscribeCommand: Action.SUBSCRIBE,
    RegisterCommand: Action.SUBSCRIBE,
}

_OPCODE_ACTIONS: dict[OapOpcode, Action] = {
    OapOpcode.GET: Action.READ,
    OapOpcode.SET: Action.WRITE,
    OapOpcode.INVOKE: Action.EXECUTE,
    OapOpcode.SUBSCRIBE: Action.SUBSCRIBE,
    OapOpcode.REGISTER: Action.SUBSCRIBE,
}

AliasResolver = Callable[[Alias | Binding], Binding | None]
SubscriberAdmission = Callable[[Binding, OID | None], bool]
"""Whether a Subscribe or Register to a binding from an identity may be taken
(:meth:`dofpy.oap.provider.ProviderSide.admits_subscriber`)."""


class Gate:
    """Permissions and interception for the commands an OAP core receives."""

    def __init__(
        self, context: OapContext, resolve: AliasResolver, admits: SubscriberAdmission
    ) -> None:
        self._context = context
        self._resolve = resolve
        self._admits = admits
        self._interceptors: dict[IID, _Interception] = {}
        self._raw_interceptors = 0
        self._raw_head: _CachedHead | None = None
        self._last_allowed: _AllowedCheck | None = None
        self._fast_paths = context.node.config.fast_paths

    def intercept(
        self,
        interface: IID,
        handler: Interceptor,
        raw: RawInterceptor | None,
        on_denied: DeniedHandler | None,
    ) -> None:
        """See :meth:`dofpy.oap.core.OapCore.intercept`."""
        if interface in self._interceptors:
            raise LocalProtocolError(f"{interface} is already intercepted")
        if not self._fast_paths:
            raw = None  # the reference: the decoded path only
        self._interceptors[interface] = _Interception(handler, raw, on_denied)
        if raw is not None:
            self._raw_interceptors += 1
            # One-way commands for raw interceptors go straight from the node
            # to them, without an event each.
            self._context.node.set_command_handler(self.on_direct_command)

    def admit(self, event: CommandReceived, now: float) -> OapPdu | None:
        """Pass one OAP command through the gate: the decoded PDU when it
        goes on to the provider or requestor path, ``None`` when the gate
        refused it or handed it to an interceptor. Raises only ``BadPacket``."""
        peer, op, identity, permissions = (
            event.peer,
            event.op_count,
            event.identity,
            event.permissions,
        )
        if self._raw_interceptors and self._route_raw(
            peer, op, event.payload, identity, permissions, now
        ):
            return None
        pdu = decode_oap_untrusted(event.payload, False)
        target = getattr(pdu, "target", None)
        action = _ACTIONS.get(type(pdu))
        interception = (
            self._interceptors.get(target.interface) if isinstance(target, Binding) else None
        )
        if action is not None and isinstance(target, Alias | Binding):
            resolved = self._resolve(target)
            on_denied = None if interception is None else interception.on_denied
            if resolved is not None and not self.admits(
                peer, identity, permissions, action, resolved, now, op, on_denied
            ):
                return None
        if interception is not None:
            interception.handler(peer, identity, op, pdu, now)
            return None
        if isinstance(pdu, ProvideCommand) and not self.permitted(
            peer, identity, permissions, Action.PROVIDE, pdu.binding, now
        ):
            return None
        return pdu

    def admits(
        self,
        peer: Address,
        identity: OID | None,
        permissions: PermissionSet | None,
        action: Action,
        binding: Binding,
        now: float,
        op: int | None = None,
        on_denied: DeniedHandler | None = None,
    ) -> bool:
        """Whether a command may go on: its permission (:meth:`permitted`),
        then, for a Subscribe or Register, whether the provider admits the
        identity (:meth:`admits_subscriber`). The one check of both paths; a
        refusal is counted, reported and answered by whichever refused."""
        return self.permitted(
            peer, identity, permissions, action, binding, now, op, on_denied
        ) and self.admits_subscriber(peer, identity, action, binding, now, op, on_denied)

    def permitted(
        self,
        peer: Address,
        identity: OID | None,
        permissions: PermissionSet | None,
        action: Action,
        binding: Binding,
        now: float,
        op: int | None = None,
        on_denied: DeniedHandler | None = None,
    ) -> bool:
        """Whether the (authenticated) requestor may do ``action`` on ``binding``;
        when not, the refusal is counted, reported (:class:`AccessDenied`) and
        answered (by ``on_denied``, else by an OAP Exception).

        Without a security configuration every request is allowed (a plaintext
        node trusts its network). With one, a request must come through a
        secure session whose granted permissions allow it: deny by default.
        """
        context = self._context
        if context.node.config.security is None:
            return True
        if permissions is not None:
            last = self._last_allowed
            # The same session's permissions (the very object) allowed the
            # same action on the same binding just before: a transfer asks
            # this thousands of times a second.
            if (
                last is not None
                and last.permissions is permissions
                and last.action == action
                and last.binding == binding
            ):
                return True
            if is_allowed(permissions, action, binding.object_id, binding.interface):
                if self._fast_paths:
                    self._last_allowed = _AllowedCheck(permissions, action, binding)
                return True
        context.counters.permission_denied += 1
        self._deny(
            peer, identity, action, binding, now, op, on_denied,
            OapErrorCode.PERMISSION_DENIED, "permission denied",
        )  # fmt: skip
        return False

    def admits_subscriber(
        self,
        peer: Address,
        identity: OID | None,
        action: Action,
        binding: Binding,
        now: float,
        op: int | None = None,
        on_denied: DeniedHandler | None = None,
    ) -> bool:
        """Whether a command doing ``action`` on ``binding`` may go on: yes
        unless it is a Subscribe or Register (``action`` SUBSCRIBE) to a
        binding whose provider does not admit ``identity`` as a subscriber.
        When not, the refusal is counted (``subscribers_refused``), reported
        (:class:`AccessDenied`) and answered (by ``on_denied``, else by the
        ``NOT_FOUND`` an object not provided gets: the requestor does not
        learn that it is provided).

        Asked on every Subscribe and Register, never cached: the permission
        check's cache (:meth:`permitted`) holds permissions, not identities.
        """
        if action != Action.SUBSCRIBE or self._admits(binding, identity):
            return True
        self._context.counters.subscribers_refused += 1
        self._deny(
            peer, identity, action, binding, now, op, on_denied,
            OapErrorCode.NOT_FOUND, NO_SUCH_OBJECT,
        )  # fmt: skip
        return False

    def _deny(
        self,
        peer: Address,
        identity: OID | None,
        action: Action,
        binding: Binding,
        now: float,
        op: int | None,
        on_denied: DeniedHandler | None,
        code: OapErrorCode,
        message: str,
    ) -> None:
        """Report a refused command (:class:`AccessDenied`) and answer it: by
        ``on_denied`` (an intercepted protocol's own terms), else with an OAP
        error ``code``. The caller counts why it refused."""
        context = self._context
        context.events.append(
            AccessDenied(peer, identity, action, binding.object_id, binding.interface)
        )
        if on_denied is not None:
            context.counters.requests_refused += 1
            on_denied(peer, op, binding, now)
        else:
            context.refuse(peer, op, code, message, now, identity)

    def on_direct_command(
        self,
        peer: Address,
        op: int | None,
        app_id: int,
        payload: bytes,
        identity: OID | None,
        permissions: PermissionSet | None,
        now: float,
    ) -> bool:
        """The node's one-way command handler: the raw path without the event
        (True when a raw interceptor took the command, or when it was
        malformed: counted as the event path counts it)."""
        if app_id != _OAP:
            return False
        try:
            return self._route_raw(peer, op, payload, identity, permissions, now)
        except BadPacket:
            self._context.counters.bad_oap_payloads += 1
            return True

    def _route_raw(
        self,
        peer: Address,
        op: int | None,
        payload: bytes,
        identity: OID | None,
        permissions: PermissionSet | None,
        now: float,
    ) -> bool:
        """Hand a command for a raw interceptor over after reading only its
        head (permissions checked as on the decoded path); False when the
        command is not one for a raw interceptor."""
        cached = self._raw_head
        if cached is not None and payload.startswith(cached.head_bytes):
            # probe_command_head_untrusted reads nothing past the head: the same
            # head bytes give the same head.
            head, interception = cached.head, cached.interception
        else:
            found = probe_command_head_untrusted(payload)
            if found is None or not isinstance(found.target, Binding):
                return False
            known = self._interceptors.get(found.target.interface)
            if known is None or known.raw is None:
                return False
            head, interception = found, known
            self._raw_head = _CachedHead(payload[: head.end], head, interception)
        assert interception.raw is not None and isinstance(head.target, Binding)
        action = _OPCODE_ACTIONS.get(head.opcode)
        on_denied = interception.on_denied
        if action is not None and not self.admits(
            peer, identity, permissions, action, head.target, now, op, on_denied
        ):
            return True
        interception.raw(peer, identity, op, head, payload, now)
        return True
