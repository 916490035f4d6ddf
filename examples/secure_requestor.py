"""A secure OAP requestor: reads the hall's thermostat and changes its target.

    python examples/secure_requestor.py --credentials requestor.cred \\
        --provider 127.0.0.1:40123 --provider-identity provider@example.org

It opens a secure session with the provider (the provider asks the
Authenticator for the session's keys), then reads ``temperature`` and
``target`` and invokes ``set_target``. It asks for ``r`` (get) and ``x``
(invoke) on the thermostat's binding, which the Authenticator must have granted::

    dofpy authenticator grant --db as.db --domain example.org requestor@example.org \\
        --actions rx --object hall@example.org --interface '[1:{01000010}]'

Trust is by identity, never by address: ``--provider-identity`` names who must
answer at ``--provider``. Anyone else there fails the handshake
(``PeerIdentityMismatch``), and the provider's answers are taken only if its
session was granted ``p`` on the binding (``ProviderNotPermitted``). Exits 0
when every request succeeded, 1 with the error otherwise.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import trio
from thermostat import HALL, THERMOSTAT

from dofpy import (
    OID,
    Action,
    Address,
    BindingPermission,
    DofError,
    OapConfig,
    PermissionSet,
    load_credentials,
    open_node,
    parse_address,
)


def requestor_permissions() -> PermissionSet:
    """What this node asks for in its sessions: get and invoke on the thermostat."""
    return PermissionSet((BindingPermission(Action.READ | Action.EXECUTE, HALL, THERMOSTAT.iid),))


def identity_argument(text: str) -> OID:
    """An identity as the Authenticator's CLI takes it: an OID in text form,
    or a bare name for class 3 (``device@example.org``)."""
    return OID.from_text(text) if text.startswith("[") else OID(3, text.encode("ascii"))


async def request(arguments: argparse.Namespace) -> None:
    credentials = load_credentials(arguments.credentials)
    provider: Address = arguments.provider
    config = OapConfig(
        node=credentials.node_config(
            requestor_permissions(),
            # Every request to the provider's address is bound to its identity.
            peer_identities={provider: arguments.provider_identity},
        )
    )
    async with open_node(config=config) as node:
        with trio.fail_after(arguments.timeout):
            identity = await node.secure_session(provider)
            print(f"secure session with {identity} at {provider[0]}:{provider[1]}")
            thermostat = THERMOSTAT.client(node, provider, HALL)
            temperature = await thermostat.temperature.get()
            target = await thermostat.target.get()
            print(f"{HALL}: temperature {temperature}, target {target}")
            previous = await thermostat.set_target(arguments.target)
            now = await thermostat.target.get()
            print(f"set_target({arguments.target}): previous {previous}, target now {now}")


def address_argument(text: str) -> Address:
    try:
        return parse_address(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="A secure OAP requestor of the hall's thermostat.",
        epilog="example: python examples/secure_requestor.py --credentials requestor.cred"
        " --provider 127.0.0.1:40123 --provider-identity provider@example.org",
    )
    parser.add_argument(
        "--credentials", type=Path, required=True, help="this node's credentials file"
    )
    parser.add_argument(
        "--provider",
        type=address_argument,
        required=True,
        metavar="HOST:PORT",
        help="the provider's UDP address",
    )
    parser.add_argument(
        "--provider-identity",
        type=identity_argument,
        required=True,
        metavar="IDENTITY",
        help="who must answer there, e.g. provider@example.org or [{03}:provider@example.org]",
    )
    parser.add_argument("--target", type=int, default=23, help="the new target (default 23)")
    parser.add_argument(
        "--timeout", type=float, default=30.0, help="seconds for everything (default 30)"
    )
    arguments = parser.parse_args(argv)
    try:
        trio.run(request, arguments)
    except (DofError, trio.TooSlowError) as error:
        print(f"secure_requestor: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
