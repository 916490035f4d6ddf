"""The Authenticator's text form of a permission: what ``dofpy authenticator
list`` prints, what the audit log stores, and what ``ungrant --permission``
reads back.

======================  ===================================================
permission              text
======================  ===================================================
binding                 ``LETTERS OBJECT INTERFACE``: actions of ``rwxsp``,
                        ``*`` (any object), ``class:N`` or an object OID,
                        ``*`` (any interface) or an interface IID, e.g.
                        ``rs * [1:{01}]``, ``x class:9 *``
IAM                     ``iam OID``
ACTAS                   ``actas OID``
Requestor, Provider     ``requestor``, ``provider``
Tunnel Domain           ``tunnel-domain OID``
Define                  ``define HEX``
any other type          ``type N`` (even N), ``type N HEX`` (odd N;
                        ``-`` for no bytes)
======================  ===================================================

:func:`describe_permission` and :func:`parse_permission` are inverses.
:func:`legacy_permission_text` reads the Python reprs that audit rows of
schema version 1 hold (the audit is append-only, so those rows stay as they
were and are rendered when read).
"""

from __future__ import annotations

import ast
import re

from dofpy.wire.oid import IID, OID
from dofpy.wire.permissions import (
    ActAsPermission,
    Action,
    BindingPermission,
    DefinePermission,
    IamPermission,
    Permission,
    ProviderPermission,
    RawPermission,
    RequestorPermission,
    TunnelDomainPermission,
)

__all__ = [
    "DOMAIN_CLASS",
    "IDENTITY_CLASS",
    "describe_permission",
    "legacy_permission_text",
    "parse_binding",
    "parse_domain",
    "parse_identity",
    "parse_object_pattern",
    "parse_oid",
    "parse_permission",
]

DOMAIN_CLASS = 6
IDENTITY_CLASS = 3


def parse_oid(text: str, default_class: int) -> OID:
    """An OID in text form (``[6:example.org]``) or a bare name of
    ``default_class``; ``ValueError`` saying what is wrong with it."""
    text = text.strip()
    if not text:
        raise ValueError("empty")
    if text.startswith("["):
        return OID.from_text(text)
    if any(c.isspace() for c in text):
        # A bare name with a space is a shell quoting slip more often than a name.
        raise ValueError("a bare name has no spaces; give such a name in OID text form")
    try:
        return OID(default_class, text.encode("ascii"))
    except UnicodeEncodeError:
        raise ValueError("a bare name is ASCII; give other names in OID text form") from None


def _named(oid: OID, what: str) -> OID:
    # An OID with no data (``[3:]``) names no one: every such node would be
    # the same node, and a typo's ``[3:]`` would enrol it.
    if not oid.data:
        raise ValueError(f"{oid} names no {what}: give it a name, e.g. [{oid.class_id}:name]")
    return oid


def parse_domain(text: str) -> OID:
    """A domain: OID text form, or a bare name (class 6); never an empty one."""
    return _named(parse_oid(text, DOMAIN_CLASS), "domain")


def parse_identity(text: str) -> OID:
    """An identity: OID text form, or a bare name (class 3); never an empty one."""
    return _named(parse_oid(text, IDENTITY_CLASS), "node")


def parse_object_pattern(text: str | None) -> tuple[OID, bool]:
    """A binding's object pattern from ``*`` (or ``None``: any object),
    ``class:N`` (any object of class N) or an object's OID or bare name:
    ``(pattern, class_match)``."""
    if text is None or text.strip() == "*":
        return OID(0), False
    text = text.strip()
    if text.startswith("class:"):
        number = text.removeprefix("class:")
        try:
            class_id = int(number, 0)
        except ValueError:
            raise ValueError(f"class {number!r} is not a number") from None
        return OID(class_id), True
    # An object pattern may be empty but for its attributes: no _named check.
    return parse_oid(text, IDENTITY_CLASS), False


def parse_binding(actions: str, obj: str | None, interface: str | None) -> BindingPermission:
    """A binding permission from its three parts (``rs``, ``*``, ``[1:{01}]``);
    ``ValueError`` naming the part at fault."""
    try:
        parsed_actions = Action.parse(actions)
    except ValueError as exc:
        raise ValueError(f"actions {actions!r}: {exc}") from None
    if not parsed_actions:
        raise ValueError("actions: give at least one of r, w, x, s, p")
    try:
        pattern, class_match = parse_object_pattern(obj)
    except ValueError as exc:
        raise ValueError(f"object {obj!r}: {exc}") from None
    parsed_interface = None
    if interface is not None and interface.strip() != "*":
        try:
            parsed_interface = IID.from_text(interface.strip())
        except ValueError as exc:
            raise ValueError(f"interface {interface!r}: {exc}") from None
    try:
        return BindingPermission(parsed_actions, pattern, parsed_interface, class_match=class_match)
    except ValueError as exc:
        raise ValueError(f"object {obj!r}: {exc}") from None


def describe_permission(permission: Permission) -> str:
    """The permission's text form (see the module docstring)."""
    if isinstance(permission, BindingPermission):
        if permission.object_pattern == OID(0):  # not any broadcast: attributes count
            target = "*"
        elif permission.class_match:
            target = f"class:{permission.object_pattern.class_id}"
        else:
            target = str(permission.object_pattern)
        interface = "*" if permission.interface is None else str(permission.interface)
        return f"{permission.actions.letters()} {target} {interface}"
    if isinstance(permission, IamPermission):
        return f"iam {permission.identity}"
    if isinstance(permission, ActAsPermission):
        return f"actas {permission.identity}"
    if isinstance(permission, TunnelDomainPermission):
        return f"tunnel-domain {permission.domain}"
    if isinstance(permission, RequestorPermission):
        return "requestor"
    if isinstance(permission, ProviderPermission):
        return "provider"
    if isinstance(permission, DefinePermission):
        return f"define {permission.payload.hex()}".rstrip()
    if permission.payload is None:
        return f"type {permission.type_id}"
    return f"type {permission.type_id} {permission.payload.hex() or '-'}"


def _hex(text: str) -> bytes:
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise ValueError(f"{text!r} is not hexadecimal") from None


def parse_permission(text: str) -> Permission:
    """The permission whose text form is ``text`` (what ``list`` prints);
    ``ValueError`` naming what is wrong."""
    text = text.strip()
    word, _, rest = text.partition(" ")
    rest = rest.strip()
    if word in ("requestor", "provider") and not rest:
        return RequestorPermission() if word == "requestor" else ProviderPermission()
    if word in ("iam", "actas", "tunnel-domain"):
        if not rest:
            raise ValueError(f"{word} needs an OID")
        oid = OID.from_text(rest) if rest.startswith("[") else parse_identity(rest)
        if word == "iam":
            return IamPermission(oid)
        if word == "actas":
            return ActAsPermission(oid)
        return TunnelDomainPermission(oid)
    if word == "define":
        return DefinePermission(_hex(rest))
    if word == "type":
        number, _, data = rest.partition(" ")
        try:
            type_id = int(number)
        except ValueError:
            raise ValueError(f"permission type {number!r} is not a number") from None
        payload = None if not data else b"" if data == "-" else _hex(data)
        return RawPermission(type_id, payload)
    # A binding: LETTERS OBJECT INTERFACE, the object possibly holding spaces.
    parts = text.split(" ", 1)
    if len(parts) != 2 or " " not in parts[1].strip():
        raise ValueError(
            "expected 'LETTERS OBJECT INTERFACE' (e.g. 'rs * [1:{01}]'), 'requestor',"
            " 'provider', 'iam OID', ..."
        )
    obj, interface = parts[1].strip().rsplit(" ", 1)
    return parse_binding(parts[0], obj, interface)


# -- schema version 1's audit rows ----------------------------------------------------------

_BYTES = r"b'(?:[^'\\]|\\.)*'|b\"(?:[^\"\\]|\\.)*\""
_OID_REPR = rf"OID\(class_id=(\d+), data=({_BYTES}), attributes=\(\)\)"
_BINDING_REPR = re.compile(
    rf"BindingPermission\(actions=<Action\.([A-Z|]+): \d+>, object_pattern={_OID_REPR},"
    rf" interface=(None|IID\(registry=(\d+), identifier=({_BYTES})\)),"
    r" class_match=(True|False)\)"
)
_IAM_REPR = re.compile(rf"(IamPermission|ActAsPermission)\(identity={_OID_REPR}\)")


def legacy_permission_text(text: str) -> str | None:
    """The text form of a permission a schema-1 audit row holds as a Python
    repr (``BindingPermission(actions=<Action.READ: 1>, ...)``), or ``None``
    when ``text`` is not one this can read (it is then shown as it is)."""
    text = text.strip()
    if text in ("RequestorPermission()", "ProviderPermission()"):
        return text.removesuffix("Permission()").lower()
    try:
        match = _BINDING_REPR.fullmatch(text)
        if match is not None:
            actions = Action(0)
            for name in match.group(1).split("|"):
                actions |= Action[name]
            pattern = OID(int(match.group(2)), ast.literal_eval(match.group(3)))
            interface = None
            if match.group(4) != "None":
                interface = IID(int(match.group(5)), ast.literal_eval(match.group(6)))
            return describe_permission(
                BindingPermission(actions, pattern, interface, match.group(7) == "True")
            )
        match = _IAM_REPR.fullmatch(text)
        if match is not None:
            identity = OID(int(match.group(2)), ast.literal_eval(match.group(3)))
            kind = IamPermission if match.group(1) == "IamPermission" else ActAsPermission
            return describe_permission(kind(identity))
    except (ValueError, KeyError, SyntaxError):
        return None
    return None
