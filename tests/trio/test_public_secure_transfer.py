"""A secure block transfer written with public names only: ``dofpy`` and the
documented ``dofpy.testing`` domain (which stands for the Authenticator's
``add-node`` files in a test), no internal module."""

from __future__ import annotations

import random
from pathlib import Path

import trio

from dofpy import (
    OID,
    TRANSFER_IID,
    Action,
    BindingPermission,
    FileStore,
    OapConfig,
    PermissionSet,
    ReceiverStatistics,
    TransferConfig,
    open_transfer_node,
)
from dofpy.testing import LocalDomain

DOMAIN = OID(6, b"example.org")
SERVER = OID(3, b"image-server@example.org")
DEVICE = OID(3, b"device@example.org")


async def test_a_secure_transfer_from_public_names(tmp_path: Path) -> None:
    # What a server needs to serve blocks: provide (p) on the block transfer's
    # interface; what a device needs to fetch: invoke (x) on it.
    serve = BindingPermission(Action.PROVIDE, OID(0), TRANSFER_IID)
    fetch = BindingPermission(Action.EXECUTE, OID(0), TRANSFER_IID)
    domain = LocalDomain(DOMAIN, rng=random.Random(7).randbytes)
    domain.enrol(SERVER, PermissionSet((serve,)))
    domain.enrol(DEVICE, PermissionSet((fetch,)))
    # Each node asks for what it was granted (the default).
    server_config = TransferConfig(oap=OapConfig(node=domain.node_config(SERVER)))
    device_config = TransferConfig(oap=OapConfig(node=domain.node_config(DEVICE)))
    image = random.Random(8).randbytes(300_000)
    async with (
        open_transfer_node(config=server_config) as server,
        open_transfer_node(config=device_config) as device,
    ):
        manifest = server.publish(image, leaf_size=4096)
        store = FileStore(tmp_path)
        with trio.fail_after(30):
            statistics = await device.fetch(manifest, [server.local_address], store=store)
        assert isinstance(statistics, ReceiverStatistics)
        assert store.read(manifest.object_id, 0, manifest.size) == image
        # It went over a secure session with the server's authenticated identity.
        assert await device.node.secure_session(server.local_address) == SERVER
        assert statistics.verification_failures == 0
        store.close()
