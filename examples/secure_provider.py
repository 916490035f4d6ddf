"""A secure OAP provider: serves the hall's thermostat inside its domain.

    python examples/secure_provider.py --credentials provider.cred

The credentials file (``dofpy authenticator add-node ... --credentials-out``)
says who this node is and where its Authenticator answers. The node asks, in
every session, for the one permission it needs: ``p`` (provide) on the
thermostat's binding, which the Authenticator must have granted::

    dofpy authenticator grant --db as.db --domain example.org provider@example.org \\
        --actions p --object hall@example.org --interface '[1:{01000010}]'

Every request arrives through a secure session (TEP keyed by the Authenticator,
AES-256-CCM), already checked against the requestor's granted permissions; a
handler learns who asks from ``current_request().identity``. It serves until
SIGINT or SIGTERM (or ``--serve-for`` seconds), then exits 0.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

import trio
from thermostat import HALL, THERMOSTAT

from dofpy import (
    Action,
    Address,
    BindingPermission,
    DofError,
    OapConfig,
    PermissionSet,
    Provider,
    current_request,
    format_address,
    load_credentials,
    open_node,
    parse_address,
)


class Thermostat(Provider):
    """The hall's thermostat: a fixed temperature, a target any permitted
    requestor may change."""

    def __init__(self, temperature: int = 21, target: int = 20) -> None:
        self.temperature = temperature
        self.target = target

    def get_temperature(self) -> int:
        return self.temperature

    def get_target(self) -> int:
        return self.target

    def set_target(self, celsius: int) -> int:
        # Who asks is the requestor's authenticated identity, never its address.
        asker = current_request().identity
        previous, self.target = self.target, celsius
        print(f"target {previous} -> {celsius} by {asker}", flush=True)
        return previous


def provider_permissions() -> PermissionSet:
    """What this node asks for in its sessions: to provide the thermostat."""
    return PermissionSet((BindingPermission(Action.PROVIDE, HALL, THERMOSTAT.iid),))


def write_ready_file(path: Path, address: str, identity: str) -> None:
    # Written whole and renamed, so that a supervisor never reads half of it.
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps({"address": address, "identity": identity}) + "\n")
    os.replace(temporary, path)


async def serve(arguments: argparse.Namespace) -> None:
    credentials = load_credentials(arguments.credentials)
    config = OapConfig(node=credentials.node_config(provider_permissions()))
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with open_node(arguments.listen, config) as node:
            node.provide(HALL, THERMOSTAT, Thermostat())
            address = format_address(node.local_address)
            print(f"serving {HALL} ({THERMOSTAT.name}) at {address} as {credentials.identity}")
            if credentials.authenticator is not None:
                print(f"keyed by the Authenticator at {format_address(credentials.authenticator)}")
            sys.stdout.flush()
            if arguments.ready_file is not None:
                write_ready_file(arguments.ready_file, address, str(credentials.identity))
            with trio.move_on_after(arguments.serve_for):
                async for signum in signals:
                    print(f"stopping ({signal.Signals(signum).name})", flush=True)
                    break


def address_argument(text: str) -> Address:
    try:
        return parse_address(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="A secure OAP provider: the hall's thermostat, served in its domain.",
        epilog="example: python examples/secure_provider.py --credentials provider.cred",
    )
    parser.add_argument(
        "--credentials", type=Path, required=True, help="this node's credentials file"
    )
    parser.add_argument(
        "--listen",
        type=address_argument,
        default=("127.0.0.1", 0),
        metavar="HOST:PORT",
        help="UDP address to serve on (default 127.0.0.1:0, any free port)",
    )
    parser.add_argument(
        "--ready-file",
        type=Path,
        help="once serving, write the bound address and identity here (JSON)",
    )
    parser.add_argument(
        "--serve-for",
        type=float,
        default=float("inf"),
        metavar="SECONDS",
        help="stop after this long (default: at SIGINT or SIGTERM)",
    )
    arguments = parser.parse_args(argv)
    try:
        trio.run(serve, arguments)
    except DofError as error:
        print(f"secure_provider: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
