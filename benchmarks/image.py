"""Image service benchmarks: publishing beside ``sha256sum`` of the same file,
serving from the image store's files beside serving from memory, and the
big-image soak (a sparse image of several GiB published and fetched by a
requestor, with each process's peak memory).

``python -m benchmarks.image [--quick]`` prints the first two;
``python -m benchmarks.image soak --size 4GiB`` runs the soak (minutes). Only
same-run ratios mean anything: the machine is shared and noisy.

- **publish**: the image streamed into an :class:`ImageStore` (SHA-256, the
  Merkle tree over 1 KiB leaves, written durably) then its manifest built and
  signed (Ed25519) and committed; and the same with encryption (AES-256-CTR).
  ``sha256sum`` reads and hashes the same file in the same run (the file is
  read once first, so both read it from the page cache).
- **serving**: one requestor fetches an image over loopback from a provider
  whose transfer store is the image store's file (:class:`ImageBlockStore`,
  behind the block cache) and from one holding it in a :class:`MemoryStore`.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import trio
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from benchmarks.summary import Summary
from dofpy.image import (
    DeviceState,
    ImageManifest,
    Party,
    SigningKey,
    TrustedKey,
    TrustRoot,
    sign_manifest,
    verify_manifest,
)
from dofpy.transfer.core import TransferConfig
from dofpy.transfer.receiver import ReceiverConfig
from dofpy.transfer.store import MemoryStore
from dofpy.trio import open_transfer_node
from dofpy_services.image.manifests import describe_manifest, summary_of_verified
from dofpy_services.image.publish import add_image_file, read_chunks
from dofpy_services.image.serving import IMAGE_INTERFACE, IMAGE_OBJECT, ImageProvider, fetch_image
from dofpy_services.image.store import ImageBlockStore, ImageStore, ManifestSummary

MEGABYTE = 1_000_000
VENDOR = uuid.UUID("6f1c0a4e-3b7d-4c2a-9e51-0d8f6a2b7c10")
DEVICE_CLASS = uuid.UUID("a3e1c9d0-5f4b-4e6a-8d2c-1b7f0e9a6c53")
_SIGNER = SigningKey(ed25519.Ed25519PrivateKey.from_private_bytes(bytes(range(32))))


def _random_file(path: Path, size: int) -> None:
    with path.open("wb") as file:
        left = size
        while left:
            piece = min(left, 1 << 20)
            file.write(os.urandom(piece))
            left -= piece


def _manifest(store: ImageStore, path: Path, leaf: int, sequence: int, encrypt: bool) -> bytes:
    recipients = [X25519PrivateKey.generate().public_key()] if encrypt else []
    prepared = add_image_file(store, path, leaf, recipients=recipients)
    now = int(time.time())
    manifest = ImageManifest(
        vendor_id=VENDOR,
        device_class=DEVICE_CLASS,
        version=f"1.{sequence}",
        sequence=sequence,
        created=now,
        expires=now + 86_400,
        image=prepared.hashes.manifest,
        encryption=None if prepared.encryption is None else prepared.encryption.to_cbor_map(),
    )
    signed = sign_manifest(manifest, _SIGNER, Party.MANUFACTURER, single=True).encode()
    store.add_manifest(signed)
    return signed


def _best(runs: int, action: object) -> float:
    best = float("inf")
    for _ in range(runs):
        started = time.perf_counter()
        action()  # type: ignore[operator]
        best = min(best, time.perf_counter() - started)
    return best


def publish_section(size: int, runs: int) -> list[tuple[str, float, str]]:
    """Publish MB/s (plain and encrypted) beside ``sha256sum`` of the same file."""
    rows: list[tuple[str, float, str]] = []
    with tempfile.TemporaryDirectory(prefix="dofpy-bench-image-") as folder:
        image = Path(folder) / "image.bin"
        _random_file(image, size)
        for _ in read_chunks(image):  # into the page cache, for both
            pass
        sha256sum = shutil.which("sha256sum")
        if sha256sum is None:
            reference = None
        else:
            reference = _best(
                runs,
                lambda: subprocess.run([sha256sum, str(image)], check=True, capture_output=True),
            )
            rows.append(("sha256sum (read + SHA-256)", size / reference / MEGABYTE, "MB/s"))
        counter = iter(range(1, 1000))
        for encrypt in (False, True):

            def publish(encrypt: bool = encrypt) -> None:
                store_root = Path(folder) / f"store-{next(counter)}"
                store = ImageStore(store_root, describe_manifest)
                _manifest(store, image, 1024, 1, encrypt)
                shutil.rmtree(store_root)

            seconds = _best(runs, publish)
            name = "publish encrypted (AES-256-CTR + " if encrypt else "publish ("
            rows.append(
                (f"{name}SHA-256 + Merkle + write + sign)", size / seconds / MEGABYTE, "MB/s")
            )
            if reference is not None:
                rows.append(("  ratio to sha256sum", reference / seconds, "x"))
    return rows


async def _serve_once(store_kind: str, folder: Path, size: int, block: int) -> float:
    image = Path(folder) / "image.bin"
    store = ImageStore(Path(folder) / "store", describe_manifest)
    prepared = add_image_file(store, image, block)
    hashes = prepared.hashes
    if store_kind == "file":
        blocks: object = ImageBlockStore(store)
    else:
        memory = MemoryStore()
        memory.put(image.read_bytes(), hashes.manifest)
        blocks = memory
    config = TransferConfig(provider_rate_cap=None, receiver=ReceiverConfig(block_size=block))
    async with (
        open_transfer_node(config=config, store=blocks) as provider,  # type: ignore[arg-type]
        open_transfer_node(config=config) as requestor,
    ):
        provider.serve(hashes)
        started = trio.current_time()
        with trio.fail_after(300):
            await requestor.fetch(hashes.manifest, [provider.local_address], store=MemoryStore())
        return trio.current_time() - started


def serving_section(size: int, runs: int) -> list[tuple[str, float, str]]:
    """Serving MB/s from the store's file beside from memory (one requestor, loopback)."""
    rows = []
    block = 8192
    with tempfile.TemporaryDirectory(prefix="dofpy-bench-serve-") as folder:
        _random_file(Path(folder) / "image.bin", size)
        seconds = {}
        for kind in ("memory", "file"):
            seconds[kind] = min(
                trio.run(_serve_once, kind, Path(folder), size, block) for _ in range(runs)
            )
        rows.append(
            (
                f"serve from MemoryStore ({block} B blocks)",
                size / seconds["memory"] / MEGABYTE,
                "MB/s",
            )
        )
        rows.append(
            (
                f"serve from the image store's file ({block} B blocks)",
                size / seconds["file"] / MEGABYTE,
                "MB/s",
            )
        )
        rows.append(("  ratio file / memory", seconds["memory"] / seconds["file"], "x"))
    return rows


def run(quick: bool = False, summary: Summary | None = None) -> str:
    size = (16 if quick else 256) * (1 << 20)
    runs = 1 if quick else 3
    lines = [f"Image publish ({size >> 20} MiB file, best of {runs})"]
    published = publish_section(size, runs)
    lines += [f"  {name:66} {value:10.2f} {unit}" for name, value, unit in published]
    serve_size = (8 if quick else 64) * (1 << 20)
    lines.append(
        f"Image serving ({serve_size >> 20} MiB to one requestor over loopback, best of {runs})"
    )
    served = serving_section(serve_size, runs)
    lines += [f"  {name:66} {value:10.2f} {unit}" for name, value, unit in served]
    if summary is not None:
        rates = {name: value for name, value, _ in (*published, *served)}
        sha256sum = rates.get("sha256sum (read + SHA-256)")
        for name, value, unit in published:
            if name.startswith("publish"):
                summary.add(
                    f"image {name.split(' (')[0]}, {size >> 20} MiB",
                    value,
                    unit,
                    "" if sha256sum is None else "sha256sum",
                    sha256sum,
                )
        memory = next((v for n, v, _ in served if n.startswith("serve from MemoryStore")), None)
        for name, value, unit in served:
            if name.startswith("serve from the image store"):
                summary.add(
                    f"image served from its store file, {serve_size >> 20} MiB",
                    value,
                    unit,
                    "MemoryStore (no disk)",
                    memory,
                )
    return "\n".join(lines)


# --- the soak: a sparse image of several GiB, published and fetched ------------------------


def _peak_rss() -> int:
    """This process's peak resident set size in bytes (Linux ``VmHWM``)."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


_TRUST_ROOT = TrustRoot(
    vendor_id=VENDOR,
    version=1,
    expires=int(time.time()) + 86_400,
    keys=(TrustedKey(Party.MANUFACTURER, _SIGNER.public_key, "bench"),),
    policy={Party.MANUFACTURER: 1},
    root_policy={Party.MANUFACTURER: 1},
)


def _accept(data: bytes) -> ManifestSummary:
    """The device's check: the benchmark's trust root, a device running nothing yet."""
    verified = verify_manifest(data, _TRUST_ROOT, DeviceState(VENDOR, DEVICE_CLASS), time.time())
    return summary_of_verified(data, verified)


async def _soak_provider(store_root: str, ready: str) -> None:
    store = ImageStore(store_root, describe_manifest)
    async with open_transfer_node(
        config=TransferConfig(provider_rate_cap=None), store=ImageBlockStore(store)
    ) as node:
        provider = ImageProvider(store, node)
        node.node.provide(IMAGE_OBJECT, IMAGE_INTERFACE, provider)
        await provider.refresh()
        host, port = node.local_address
        Path(ready).write_text(f"{host}:{port}\n", encoding="ascii")
        # Serve until the parent says stop (a file), then report.
        stop = Path(ready + ".stop")
        while not stop.exists():
            await trio.sleep(0.2)
        statistics = node.statistics().transfer
        print(
            f"provider peak_rss={_peak_rss()} bytes_sent={statistics.bytes_sent} "
            f"cache_bytes={statistics.cache.bytes}",
            flush=True,
        )


async def _soak_requestor(address: str, target: str, staging: str, block: int) -> None:
    host, _, port = address.rpartition(":")
    config = TransferConfig(receiver=ReceiverConfig(block_size=block))
    async with open_transfer_node(config=config) as node:
        started = trio.current_time()
        fetched = await fetch_image(
            node, [(host, int(port))], DEVICE_CLASS, _accept, target, staging=staging
        )
        seconds = trio.current_time() - started
    print(
        f"requestor peak_rss={_peak_rss()} bytes={fetched.size} seconds={seconds:.1f}",
        flush=True,
    )


def _parse_size(text: str) -> int:
    matched = re.fullmatch(r"(\d+)\s*([KMG]i?B?)?", text.strip(), re.IGNORECASE)
    if matched is None:
        raise ValueError(f"not a size: {text!r}")
    units = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    return int(matched[1]) * units[(matched[2] or "")[:1].lower()]


def soak(size: int, leaf: int = 8192, folder: str | None = None) -> dict[str, int | float]:
    """Publish a sparse ``size``-byte image and fetch it into a file by block
    over loopback, provider and requestor in processes of their own; returns
    each's peak RSS, the publisher's, and the timings."""
    result: dict[str, int | float] = {}
    with tempfile.TemporaryDirectory(prefix="dofpy-soak-", dir=folder) as work:
        root = Path(work)
        image = root / "sparse.img"
        with image.open("wb") as file:
            file.truncate(size)  # a hole: no disk, reads as zeros
            file.seek(size // 2)
            file.write(b"a few bytes of data in the middle of the hole")
        started = time.perf_counter()
        publisher = subprocess.run(
            [
                sys.executable,
                "-m",
                "benchmarks.image",
                "_publish",
                str(root / "store"),
                str(image),
                str(leaf),
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        result["publish_seconds"] = time.perf_counter() - started
        result["publisher_peak_rss"] = int(publisher.stdout.split("peak_rss=")[1].split()[0])
        ready = root / "provider.address"
        provider = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "benchmarks.image",
                "_provider",
                str(root / "store"),
                str(ready),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            for _ in range(600):
                if ready.exists() and ready.read_text(encoding="ascii").endswith("\n"):
                    break
                time.sleep(0.1)
            address = ready.read_text(encoding="ascii").strip()
            target = root / "installed.img"
            requestor = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "benchmarks.image",
                    "_requestor",
                    address,
                    str(target),
                    str(root / "staging"),
                    str(leaf),
                ],
                check=True,
                capture_output=True,
                text=True,
            )
            result["requestor_peak_rss"] = int(requestor.stdout.split("peak_rss=")[1].split()[0])
            result["fetch_seconds"] = float(requestor.stdout.split("seconds=")[1].split()[0])
            result["installed_bytes"] = target.stat().st_size
            with target.open("rb") as installed:
                installed.seek(size // 2)
                result["middle_ok"] = int(installed.read(13) == b"a few bytes o")
        finally:
            Path(str(ready) + ".stop").write_text("stop", encoding="ascii")
            out, _ = provider.communicate(timeout=60)
        result["provider_peak_rss"] = int(out.split("peak_rss=")[1].split()[0])
        result["provider_bytes_sent"] = int(out.split("bytes_sent=")[1].split()[0])
    return result


def _publish_main(store_root: str, image: str, leaf: int) -> None:
    store = ImageStore(store_root, describe_manifest)
    _manifest(store, Path(image), leaf, 1, False)
    print(f"publisher peak_rss={_peak_rss()}", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["_publish"]:
        _publish_main(arguments[1], arguments[2], int(arguments[3]))
        return 0
    if arguments[:1] == ["_provider"]:
        trio.run(_soak_provider, arguments[1], arguments[2])
        return 0
    if arguments[:1] == ["_requestor"]:
        trio.run(_soak_requestor, arguments[1], arguments[2], arguments[3], int(arguments[4]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", nargs="?", choices=("bench", "soak"), default="bench")
    parser.add_argument("--quick", action="store_true", help="smaller files, one run each")
    parser.add_argument("--size", default="4GiB", help="the soak's image size (4GiB)")
    parser.add_argument("--leaf-size", type=int, default=8192, help="the soak's leaf size")
    parser.add_argument("--dir", help="where the soak's files go (default: the temp folder)")
    args = parser.parse_args(arguments)
    if args.mode == "soak":
        size = _parse_size(args.size)
        print(f"Soak: a {size} byte sparse image, leaves of {args.leaf_size} bytes")
        for name, value in soak(size, args.leaf_size, args.dir).items():
            shown = f"{value / (1 << 20):.1f} MiB" if name.endswith("rss") else value
            print(f"  {name:24} {shown}")
        return 0
    print(run(args.quick))
    return 0


if __name__ == "__main__":
    sys.exit(main())
