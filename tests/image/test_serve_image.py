"""Images served over the network: the ImageProvider OAP interface and the
block transfer from the image store, several providers on one store, and a
confidential image through a caching relay whose store holds only ciphertext.

Secure sessions in a test domain; a device is granted invoke (x) on the Image
interface and on the block transfer's, nothing more."""

from __future__ import annotations

import random
import uuid
from pathlib import Path

import cbor2
import pytest
import trio
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from dofpy import (
    OID,
    TRANSFER_IID,
    Action,
    BindingPermission,
    FileStore,
    OapConfig,
    PermissionSet,
    TransferConfig,
    open_transfer_node,
)
from dofpy.errors import BadPacket
from dofpy.oap.errors import ProviderException
from dofpy.testing import LocalDomain
from dofpy_services.image.encryption import DecryptionError, EncryptionInfo
from dofpy_services.image.publish import add_image_file
from dofpy_services.image.serving import (
    IMAGE_INTERFACE,
    IMAGE_OBJECT,
    ImageProvider,
    RelayProvider,
    fetch_image,
)
from dofpy_services.image.store import ImageBlockStore, ImageStore, ManifestSummary
from tests.image._store_helpers import describe_test_manifest, stand_in_manifest

DOMAIN = OID(6, b"example.org")
SERVER = OID(3, b"image-server@example.org")
SECOND = OID(3, b"image-server-2@example.org")
RELAY = OID(3, b"relay@example.org")
DEVICE = OID(3, b"device@example.org")
CLASS = uuid.UUID("6f1c2a52-0d3e-4e0b-9a43-1d2f6f0c7b11")
LEAF = 1024


def _domain() -> LocalDomain:
    fetch = BindingPermission(Action.EXECUTE, OID(0), TRANSFER_IID)
    ask = BindingPermission(Action.EXECUTE, OID(0), IMAGE_INTERFACE.iid)
    # Servers and the relay provide (p) the block transfer and the image interface.
    serve = (
        BindingPermission(Action.PROVIDE, OID(0), TRANSFER_IID),
        BindingPermission(Action.PROVIDE, OID(0), IMAGE_INTERFACE.iid),
    )
    domain = LocalDomain(DOMAIN, rng=random.Random(7).randbytes)
    for server in (SERVER, SECOND):
        domain.enrol(server, PermissionSet(serve))
    domain.enrol(RELAY, PermissionSet((*serve, fetch, ask)))
    domain.enrol(DEVICE, PermissionSet((fetch, ask)))
    return domain


def _config(domain: LocalDomain, identity: OID) -> TransferConfig:
    return TransferConfig(oap=OapConfig(node=domain.node_config(identity)))


def _encrypted_manifest(image_manifest: bytes, info: EncryptionInfo | None) -> bytes:
    """The stand-in manifest with the encryption map the real one carries (key 13)."""
    value = cbor2.loads(image_manifest)
    value["encryption"] = None if info is None else info.to_cbor_map()
    return cbor2.dumps(value)


def _describe(data: bytes) -> ManifestSummary:
    summary = describe_test_manifest(data)
    info = _encryption_of(data)
    references = () if info is None else info.records
    return ManifestSummary(
        summary.vendor_id,
        summary.class_id,
        summary.version,
        summary.sequence,
        summary.image,
        encrypted=info is not None,
        references=references,
    )


def _encryption_of(data: bytes) -> EncryptionInfo | None:
    value = cbor2.loads(data).get("encryption")
    return None if value is None else EncryptionInfo.from_cbor_map_untrusted(value)


def _publish(
    store: ImageStore, source: Path, sequence: int, recipients: tuple[X25519PrivateKey, ...] = ()
) -> bytes:
    prepared = add_image_file(store, source, LEAF, recipients=[k.public_key() for k in recipients])
    manifest = stand_in_manifest(prepared.hashes.manifest, class_id=str(CLASS), sequence=sequence)
    return store.add_manifest(_encrypted_manifest(manifest, prepared.encryption))


def _accept(data: bytes) -> ManifestSummary:
    # The manifest helper's verifier goes here on a device; the stand-in
    # manifests of these tests carry no signatures.
    return _describe(data)


async def test_a_device_fetches_the_latest_image_and_another_provider_serves_the_same_store(
    tmp_path: Path,
) -> None:
    domain = _domain()
    store = ImageStore(tmp_path / "store", _describe)
    old = random.Random(1).randbytes(50_000)
    new = random.Random(2).randbytes(120_000)
    (tmp_path / "old.bin").write_bytes(old)
    (tmp_path / "new.bin").write_bytes(new)
    _publish(store, tmp_path / "old.bin", 1)
    store.set_trust_root(b"the vendor's trust root")
    async with (
        open_transfer_node(config=_config(domain, SERVER), store=ImageBlockStore(store)) as server,
        open_transfer_node(config=_config(domain, DEVICE)) as device,
    ):
        provider = ImageProvider(store, server)
        server.node.provide(IMAGE_OBJECT, IMAGE_INTERFACE, provider)
        await provider.refresh()
        # Published after the provider started, by another process on the same store.
        newest = _publish(ImageStore(tmp_path / "store", _describe), tmp_path / "new.bin", 2)
        target = tmp_path / "installed.bin"
        with trio.fail_after(60):
            fetched = await fetch_image(
                device,
                [server.local_address],
                CLASS,
                _accept,
                target,
                staging=tmp_path / "staging",
            )
        assert target.read_bytes() == new
        assert fetched.summary.sequence == 2 and fetched.size == len(new)
        assert list((tmp_path / "staging").iterdir()) == []  # moved, marks removed
        client = IMAGE_INTERFACE.client(device.node, server.local_address, IMAGE_OBJECT)
        assert await client.manifest(newest) == fetched.manifest
        assert await client.trust_root() == b"the vendor's trust root"
        with pytest.raises(ProviderException, match="no manifest for device class"):
            await client.latest(uuid.UUID(int=5).bytes)
        with pytest.raises(ProviderException, match="no key record"):
            await client.key_record(bytes(32))
        assert provider.served_images == 2
        assert server.statistics().transfer.cache.misses > 0  # read through the block cache

    # A second provider, another process, serves the same store.
    async with (
        open_transfer_node(
            config=_config(domain, SECOND),
            store=ImageBlockStore(ImageStore(tmp_path / "store", _describe)),
        ) as second,
        open_transfer_node(config=_config(domain, DEVICE)) as device,
    ):
        second_store = ImageStore(tmp_path / "store", _describe)
        provider = ImageProvider(second_store, second)
        second.node.provide(IMAGE_OBJECT, IMAGE_INTERFACE, provider)
        await provider.refresh()
        again = tmp_path / "again.bin"
        with trio.fail_after(60):
            await fetch_image(
                device, [second.local_address], CLASS, _accept, again, staging=tmp_path / "s2"
            )
        assert again.read_bytes() == new


async def test_an_encrypted_image_through_a_caching_relay_that_holds_only_ciphertext(
    tmp_path: Path,
) -> None:
    domain = _domain()
    store = ImageStore(tmp_path / "store", _describe)
    plaintext = random.Random(3).randbytes(200_000)
    (tmp_path / "image.bin").write_bytes(plaintext)
    device_key = X25519PrivateKey.generate()
    digest = _publish(store, tmp_path / "image.bin", 7, (device_key,))
    ciphertext = store.image_path(store.summary(digest).image.object_id).read_bytes()
    assert ciphertext != plaintext
    relay_dir = tmp_path / "relay"
    relay_store = FileStore(relay_dir)
    async with (
        open_transfer_node(config=_config(domain, SERVER), store=ImageBlockStore(store)) as server,
        open_transfer_node(config=_config(domain, RELAY), store=relay_store) as relay,
        open_transfer_node(config=_config(domain, DEVICE)) as first,
        open_transfer_node(config=_config(domain, DEVICE)) as second,
    ):
        provider = ImageProvider(store, server)
        server.node.provide(IMAGE_OBJECT, IMAGE_INTERFACE, provider)
        await provider.refresh()
        relaying = RelayProvider(relay, [server.local_address], _describe)
        relay.node.provide(IMAGE_OBJECT, IMAGE_INTERFACE, relaying)
        installed = []
        with trio.fail_after(60):
            for n, device in enumerate((first, second)):
                target = tmp_path / f"installed-{n}.bin"
                await fetch_image(
                    device,
                    [relay.local_address],  # the devices only ever talk to the relay
                    CLASS,
                    _accept,
                    target,
                    staging=tmp_path / f"staging-{n}",
                    recipient_key=device_key,
                    encryption_of=_encryption_of,
                )
                installed.append(target.read_bytes())
        assert installed == [plaintext, plaintext]
        # The relay passes the provider's NotFound on as it is.
        through = IMAGE_INTERFACE.client(first.node, relay.local_address, IMAGE_OBJECT)
        with pytest.raises(ProviderException, match="no manifest for device class"):
            await through.latest(uuid.UUID(int=9).bytes)
        # What it serves by digest it checked against the digest.
        assert await through.manifest(digest) == store.manifest(digest)
        served_upstream = server.statistics().transfer.bytes_sent
        # The relay fetched the image from upstream once for both devices.
        assert len(ciphertext) <= served_upstream < 2 * len(ciphertext)
    relay_store.close()
    relay_files = {p.name: p.read_bytes() for p in relay_dir.iterdir()}
    data_files = [v for k, v in relay_files.items() if k.endswith(".data")]
    assert data_files == [ciphertext]
    window = plaintext[100_000:100_064]
    assert all(window not in content for content in relay_files.values())


async def test_a_wrong_device_key_installs_nothing(tmp_path: Path) -> None:
    domain = _domain()
    store = ImageStore(tmp_path / "store", _describe)
    (tmp_path / "image.bin").write_bytes(b"secret firmware" * 3000)
    _publish(store, tmp_path / "image.bin", 1, (X25519PrivateKey.generate(),))
    async with (
        open_transfer_node(config=_config(domain, SERVER), store=ImageBlockStore(store)) as server,
        open_transfer_node(config=_config(domain, DEVICE)) as device,
    ):
        provider = ImageProvider(store, server)
        server.node.provide(IMAGE_OBJECT, IMAGE_INTERFACE, provider)
        await provider.refresh()
        target = tmp_path / "installed.bin"
        with trio.fail_after(60), pytest.raises(DecryptionError, match="no recipient"):
            await fetch_image(
                device,
                [server.local_address],
                CLASS,
                _accept,
                target,
                staging=tmp_path / "staging",
                recipient_key=X25519PrivateKey.generate(),
                encryption_of=_encryption_of,
            )
        assert not target.exists()


async def test_a_manifest_the_device_refuses_fetches_nothing(tmp_path: Path) -> None:
    domain = _domain()
    store = ImageStore(tmp_path / "store", _describe)
    (tmp_path / "image.bin").write_bytes(b"firmware" * 3000)
    _publish(store, tmp_path / "image.bin", 1)

    def refuse(data: bytes) -> ManifestSummary:
        raise BadPacket("below threshold: 0 of 2 manufacturer signatures")

    async with (
        open_transfer_node(config=_config(domain, SERVER), store=ImageBlockStore(store)) as server,
        open_transfer_node(config=_config(domain, DEVICE)) as device,
    ):
        provider = ImageProvider(store, server)
        server.node.provide(IMAGE_OBJECT, IMAGE_INTERFACE, provider)
        await provider.refresh()
        with trio.fail_after(60), pytest.raises(BadPacket, match="below threshold"):
            await fetch_image(
                device,
                [server.local_address],
                CLASS,
                refuse,
                tmp_path / "t",
                staging=tmp_path / "s",
            )
        assert server.statistics().transfer.fetches_received == 0
