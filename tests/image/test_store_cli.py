"""The store's ``dofpy image`` commands end to end: the trust root into the
store, a multi-party publish (staged until the thresholds are met), a
confidential publish, list, gc; ``dofpy image serve`` as a daemon and
``dofpy image fetch`` installing from it (and from a relay daemon)."""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from dofpy.image import Party
from dofpy.image.cose import decode_cose_untrusted
from dofpy_services.cli import main
from dofpy_services.daemon.lifecycle import run_daemon
from dofpy_services.image.commands import open_image_store
from dofpy_services.image.keys import write_private_key
from dofpy_services.image.manifests import manifest_named
from dofpy_services.image.service import IMAGE, ImageConfig
from tests.image.signing_fixtures import DEVICE_CLASS, Keys, make_root, sign_root

KEYS = Keys.make()


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    status = main(["image", *argv])
    return status, capsys.readouterr().out


def _setup(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    for name in ("m1", "m2", "sp", "outsider"):
        write_private_key(tmp_path / name, getattr(KEYS, name))
    root = make_root(KEYS, expires=int(time.time()) + 365 * 86_400)
    (tmp_path / "root.cose").write_bytes(
        sign_root(root, (KEYS.m1, Party.MANUFACTURER), (KEYS.m2, Party.MANUFACTURER))
    )
    status, out = _run(
        capsys,
        "publish",
        "--trust-root",
        str(tmp_path / "root.cose"),
        "--store",
        str(tmp_path / "store"),
    )
    assert status == 0 and "trust root version 1" in out
    return tmp_path / "store"


def _publish_signed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], image: Path, sequence: int, *extra: str
) -> Path:
    store = tmp_path / "store"
    manifest = tmp_path / f"{sequence}.manifest"
    status, out = _run(
        capsys,
        "publish",
        str(image),
        "--store",
        str(store),
        "--class",
        str(DEVICE_CLASS),
        "--version",
        f"2.{sequence}",
        "--sequence",
        str(sequence),
        "--key",
        str(tmp_path / "m1"),
        "--out",
        str(manifest),
        *extra,
    )
    assert status == 0, out
    assert "staged" in out and "NOT met" in out  # one manufacturer key of two, no service provider
    for signer, party in (("outsider", "manufacturer"), ("m2", "manufacturer")):
        assert (
            main(
                ["image", "sign", str(manifest), "--key", str(tmp_path / signer), "--party", party]
            )
            == 0
        )
    status, out = _run(capsys, "publish", "--manifest", str(manifest), "--store", str(store))
    assert status == 1 and "REFUSED: below threshold" in out  # the outsider's does not count
    assert (
        main(
            [
                "image",
                "sign",
                str(manifest),
                "--key",
                str(tmp_path / "sp"),
                "--party",
                "service-provider",
            ]
        )
        == 0
    )
    status, out = _run(capsys, "publish", "--manifest", str(manifest), "--store", str(store))
    assert status == 0 and "published 2." in out, out
    return manifest


def test_publish_list_and_gc(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = _setup(tmp_path, capsys)
    image = tmp_path / "fw.bin"
    image.write_bytes(random.Random(1).randbytes(40_000))
    _publish_signed(tmp_path, capsys, image, 3)
    image.write_bytes(random.Random(2).randbytes(30_000))
    assert main(["image", "recipient-keygen", str(tmp_path / "class-key")]) == 0
    assert (tmp_path / "class-key").stat().st_mode & 0o777 == 0o600
    _publish_signed(
        tmp_path, capsys, image, 4, "--encrypt", "--recipient", str(tmp_path / "class-key.pub")
    )
    capsys.readouterr()
    status, out = _run(capsys, "list", "--store", str(store), "--format", "json")
    assert status == 0
    listed = json.loads(out)
    assert [(e["sequence"], e["encrypted"], e["thresholds"], e["latest"]) for e in listed] == [
        (3, "no", "met", ""),
        (4, "yes", "met", "*"),
    ]
    assert listed[1]["size"] == 30_000  # the ciphertext: as long as the image
    assert listed[1]["signers"].count("manufacturer") == 3  # m1, outsider, m2 (claimed)
    # The staged, less-signed copies of each release never reached the store;
    # keep 1 drops version 2.3 and its image.
    status, out = _run(capsys, "gc", "--store", str(store), "--keep", "1")
    assert status == 0 and "removed 1 manifests, 1 images" in out
    reopened = open_image_store(store)
    assert [e.summary.sequence for e in reopened.published()] == [4]
    assert reopened.check() == []


@asynccontextmanager
async def _daemon(config: ImageConfig) -> AsyncIterator[dict[str, str]]:
    send, receive = trio.open_memory_channel[int](1)

    async def signals() -> AsyncIterator[int]:
        async for signum in receive:
            yield signum

    async with trio.open_nursery() as nursery:
        addresses: Any = await nursery.start(
            lambda task_status: run_daemon(
                IMAGE, config, signals=signals(), task_status=task_status
            )
        )
        yield dict(addresses)
        await send.send(15)


async def test_serve_and_fetch_through_a_relay(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = _setup(tmp_path, capsys)
    plaintext = random.Random(3).randbytes(150_000)
    image = tmp_path / "fw.bin"
    image.write_bytes(plaintext)
    assert main(["image", "recipient-keygen", str(tmp_path / "class-key")]) == 0
    _publish_signed(
        tmp_path, capsys, image, 5, "--encrypt", "--recipient", str(tmp_path / "class-key.pub")
    )
    served = ImageConfig(listen=("127.0.0.1", 0), store=str(store))
    async with _daemon(served) as provider:
        relay = ImageConfig(
            listen=("127.0.0.1", 0), store=str(tmp_path / "relay"), upstream=provider["udp"]
        )
        async with _daemon(relay) as relayed:
            argv = [
                "image",
                "fetch",
                "--provider",
                relayed["udp"],
                "--class",
                str(DEVICE_CLASS),
                "--trust-root",
                str(tmp_path / "root.cose"),
                "--recipient-key",
                str(tmp_path / "class-key"),
                "--installed-sequence",
                "4",
                "--allow-plaintext",
                "--timeout",
                "60",
                "--out",
                str(tmp_path / "installed.bin"),
            ]
            status = await trio.to_thread.run_sync(main, argv)
            assert status == 0
            assert (tmp_path / "installed.bin").read_bytes() == plaintext
            # A device that runs it already refuses it (rollback), before fetching.
            argv[argv.index("--installed-sequence") + 1] = "5"
            argv[argv.index("--out") + 1] = str(tmp_path / "again.bin")
            assert await trio.to_thread.run_sync(main, argv) == 1
            assert not (tmp_path / "again.bin").exists()
    relay_data = [p.read_bytes() for p in (tmp_path / "relay").glob("*.data")]
    assert len(relay_data) == 1 and plaintext[5000:5100] not in relay_data[0]
    assert "REFUSED (Rollback)" in capsys.readouterr().out


def test_a_manifest_is_served_by_its_payload_digest_too(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Campaign terms and the devices' assignments name a release by its
    payload's digest (the same whoever signed it); the store keeps each
    signed copy by its bytes' digest. Both names find it: the payload's, the
    most signed copy."""
    store = _setup(tmp_path, capsys)
    image = tmp_path / "fw.bin"
    image.write_bytes(random.Random(9).randbytes(5000))
    manifest_file = _publish_signed(tmp_path, capsys, image, 7)
    signed = manifest_file.read_bytes()
    payload_digest = hashlib.sha256(decode_cose_untrusted(signed).payload).digest()
    opened = open_image_store(store)
    by_bytes = hashlib.sha256(signed).digest()
    assert payload_digest != by_bytes
    assert opened.manifest(by_bytes) == opened.manifest(payload_digest) == signed
    assert manifest_named(signed, payload_digest) and manifest_named(signed, by_bytes)
    assert not manifest_named(signed, bytes(32))
    assert not manifest_named(b"not a manifest", hashlib.sha256(b"other").digest())
    with pytest.raises(KeyError):
        opened.manifest(hashlib.sha256(b"no such release").digest())
