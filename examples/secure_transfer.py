"""A secure block transfer: an image server publishes a file, a device fetches
it over a secure session, every block verified before it is stored.

    python examples/secure_transfer.py --server-credentials image-server.cred \\
        --device-credentials device.cred --file firmware.bin

Both nodes run in this one process, each with its own credentials (``dofpy
authenticator add-node ... --credentials-out``). Publishing gives a
:class:`~dofpy.Manifest` (the object's SHA-256 and Merkle root): the device
must get it through a trusted channel (here: memory; in a fleet, a signed
update manifest), because it is what every block is verified against.

The block transfer's interface is ``TRANSFER_IID`` (``[1:{D0F1}]``), on one
object per published image. The server asks for ``p`` (provide) on it, the
device for ``x`` (a fetch is an invoke); the Authenticator must have granted::

    dofpy authenticator grant --db as.db --domain example.org image-server@example.org \\
        --actions p --object '*' --interface '[1:{D0F1}]'
    dofpy authenticator grant --db as.db --domain example.org device@example.org \\
        --actions x --object '*' --interface '[1:{D0F1}]'

The device trusts the server by identity (``peer_identities``), not by
address. Exits 0 when the fetched object is the published file, byte for byte.
"""

from __future__ import annotations

import argparse
import hashlib
import secrets
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import trio

from dofpy import (
    OID,
    TRANSFER_IID,
    Action,
    BindingPermission,
    DofError,
    FileStore,
    NodeCredentials,
    OapConfig,
    PermissionSet,
    TransferConfig,
    load_credentials,
    open_transfer_node,
)

ANY_OBJECT = OID(0)
"""The broadcast OID: as a permission's object pattern, any object (each
published image is an object of its own)."""


def server_permissions() -> PermissionSet:
    """What the server asks for: to provide the block transfer of any object."""
    return PermissionSet((BindingPermission(Action.PROVIDE, ANY_OBJECT, TRANSFER_IID),))


def device_permissions() -> PermissionSet:
    """What the device asks for: to fetch (invoke) from the block transfer."""
    return PermissionSet((BindingPermission(Action.EXECUTE, ANY_OBJECT, TRANSFER_IID),))


async def transfer(
    image: bytes,
    server_credentials: NodeCredentials,
    device_credentials: NodeCredentials,
    out: Path,
    leaf_size: int,
    timeout: float,
) -> None:
    server_config = TransferConfig(
        oap=OapConfig(node=server_credentials.node_config(server_permissions()))
    )
    async with open_transfer_node(config=server_config) as server:
        manifest = server.publish(image, leaf_size=leaf_size)
        print(
            f"published {manifest.size} bytes as {manifest.object_id.hex()}"
            f" (Merkle root {manifest.merkle_root.hex()[:16]}...) by {server_credentials.identity}"
        )
        device_config = TransferConfig(
            oap=OapConfig(
                node=device_credentials.node_config(
                    device_permissions(),
                    # Only the image server's identity may answer at its address.
                    peer_identities={server.local_address: server_credentials.identity},
                )
            )
        )
        async with open_transfer_node(config=device_config) as device:
            store = FileStore(out)
            try:
                with trio.fail_after(timeout):
                    statistics = await device.fetch(manifest, [server.local_address], store=store)
                fetched = store.read(manifest.object_id, 0, manifest.size)
            finally:
                store.close()
    if hashlib.sha256(fetched).digest() != manifest.object_id or fetched != image:
        raise SystemExit("secure_transfer: the fetched object is not the published file")
    print(
        f"{device_credentials.identity} fetched {statistics.bytes_verified} bytes into {out}:"
        f" {statistics.blocks_received} blocks, {statistics.verification_failures}"
        f" verification failures, {statistics.retransmissions} retransmissions"
    )
    print("verified: the fetched object is the published file (SHA-256 and every block)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="A secure block transfer: publish a file, fetch it securely, verified.",
        epilog="example: python examples/secure_transfer.py --server-credentials"
        " image-server.cred --device-credentials device.cred --file firmware.bin",
    )
    parser.add_argument(
        "--server-credentials", type=Path, required=True, help="the image server's credentials"
    )
    parser.add_argument(
        "--device-credentials", type=Path, required=True, help="the device's credentials"
    )
    parser.add_argument(
        "--file", type=Path, help="the file to publish (default: --size random bytes)"
    )
    parser.add_argument(
        "--size", type=int, default=1 << 20, help="random bytes to publish without --file"
    )
    parser.add_argument(
        "--out",
        type=Path,
        help="the device's store directory (default: a temporary one, removed at the end)",
    )
    parser.add_argument(
        "--leaf-size", type=int, default=4096, help="bytes per verified leaf (default 4096)"
    )
    parser.add_argument(
        "--timeout", type=float, default=60.0, help="seconds the fetch may take (default 60)"
    )
    arguments = parser.parse_args(argv)
    if arguments.file is None and arguments.size < 1:
        parser.error("--size must be at least 1 byte")
    try:
        image = (
            arguments.file.read_bytes() if arguments.file else secrets.token_bytes(arguments.size)
        )
    except OSError as error:
        parser.error(f"--file {arguments.file}: {error.strerror}")
    try:
        server = load_credentials(arguments.server_credentials)
        device = load_credentials(arguments.device_credentials)
        with tempfile.TemporaryDirectory(prefix="dofpy-device-") as temporary:
            out = arguments.out or Path(temporary)
            trio.run(transfer, image, server, device, out, arguments.leaf_size, arguments.timeout)
    except (DofError, trio.TooSlowError) as error:
        print(f"secure_transfer: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
