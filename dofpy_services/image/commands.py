"""The image store's ``dofpy image`` commands.

- ``dofpy image recipient-keygen NAME`` — an X25519 key pair for a device
  class (``NAME``, mode 0600, and ``NAME.pub``): confidential images are
  encrypted to its public half, devices of the class hold the private one.
- ``dofpy image publish FILE --store DIR --vendor V --class C --version V
  --sequence N [--encrypt --recipient PUB...] [--key K --party P] --out M``:
  the image streamed into the store (encrypted under a fresh content key when
  asked), its manifest written to ``M`` (unsigned, or signed with ``--key``);
  published at once when the store's trust root's thresholds are met, else
  staged for the other parties' ``dofpy image sign``.
- ``dofpy image publish --manifest M --store DIR``: publish a manifest the
  parties signed (refused below threshold).
- ``dofpy image publish --trust-root ROOT --store DIR``: the store's trust
  root, first set or rotated (accepted as a device would).
- ``dofpy image list --store DIR`` — classes, versions, sizes, signers, expiry.
- ``dofpy image gc --store DIR [--keep N] [--expired] [--dry-run]``.
- ``dofpy image fetch --provider ADDR --class C --trust-root ROOT --out FILE``
  — a requestor: the latest manifest, verified as a device would, the image
  by block, installed atomically (decrypted with ``--recipient-key``).
- ``dofpy image serve`` — the runner (see :mod:`~dofpy_services.image.service`).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import stat
import time
import uuid
from pathlib import Path

import trio
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from dofpy.credentials import load_credentials, parse_address
from dofpy.errors import BadPacket, DofError
from dofpy.image.errors import ManifestRefused
from dofpy.image.manifest import ImageKind, ImageManifest
from dofpy.image.trust import (
    Party,
    TrustRoot,
    accept_trust_root,
    check_signatures,
    rotate_trust_root,
)
from dofpy.image.verify import DeviceState, open_manifest_untrusted, sign_manifest, verify_manifest
from dofpy.oap.core import OapConfig
from dofpy.transfer.core import TransferConfig
from dofpy.trio import open_transfer_node
from dofpy_services.daemon.cli import CliError, UsageError, add_format_flag, print_records
from dofpy_services.daemon.service import Command
from dofpy_services.image.keys import load_private_key, read_passphrase, write_document
from dofpy_services.image.manifests import describe_manifest, encryption_of, summary_of_verified
from dofpy_services.image.publish import add_image_file
from dofpy_services.image.serving import fetch_image
from dofpy_services.image.signing import parse_time
from dofpy_services.image.store import ImageStore, ManifestSummary

__all__ = [
    "STORE_COMMANDS",
    "load_recipient_private_key",
    "load_recipient_public_key",
    "open_image_store",
    "store_trust_root",
]


def open_image_store(root: str | os.PathLike[str]) -> ImageStore:
    """The image store at ``root``, reading ``dofpy.image`` manifests."""
    return ImageStore(root, describe_manifest)


def store_trust_root(store: ImageStore, now: float) -> TrustRoot | None:
    """The store's current trust root, checked on its own signatures."""
    data = store.trust_root()
    return None if data is None else accept_trust_root(data, now)


# -- recipient keys -------------------------------------------------------------------


def _recipient_keygen_flags(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("name", metavar="NAME", help="write NAME (private, 0600) and NAME.pub")


def _recipient_keygen(args: argparse.Namespace) -> int:
    private = X25519PrivateKey.generate()
    target = Path(args.name)
    public_path = target.with_name(target.name + ".pub")
    for path in (target, public_path):
        if path.exists():
            raise CliError(f"{path} exists; refusing to overwrite a key")
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    descriptor = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(pem)
        file.flush()
        os.fsync(file.fileno())
    public = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    write_document(public_path, public)
    print(f"recipient key {target} (private, 0600) and {public_path} (give it to publishers)")
    return 0


def load_recipient_public_key(path: str | os.PathLike[str]) -> X25519PublicKey:
    try:
        key = serialization.load_pem_public_key(Path(path).read_bytes())
    except (OSError, ValueError) as exc:
        raise CliError(f"{path}: not a recipient public key: {exc}") from None
    if not isinstance(key, X25519PublicKey):
        raise CliError(f"{path} is not an X25519 public key (make one with recipient-keygen)")
    return key


def load_recipient_private_key(path: str | os.PathLike[str]) -> X25519PrivateKey:
    """A device's recipient key; refuses a file others may read."""
    source = Path(path)
    try:
        with source.open("rb") as file:
            mode = os.fstat(file.fileno()).st_mode
            if mode & 0o077:
                raise CliError(
                    f"{source} is accessible by group or others (mode {stat.S_IMODE(mode):04o}):"
                    f" chmod 600 {source}"
                )
            data = file.read()
        key = serialization.load_pem_private_key(data, None)
    except (OSError, ValueError, TypeError) as exc:
        raise CliError(f"{source}: not a recipient private key: {exc}") from None
    if not isinstance(key, X25519PrivateKey):
        raise CliError(f"{source} is not an X25519 private key")
    return key


# -- publish --------------------------------------------------------------------------


def _publish_flags(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("image", metavar="FILE", nargs="?", help="the image to publish")
    sub.add_argument("--store", required=True, help="the image store's folder")
    sub.add_argument("--manifest", help="publish this signed manifest (its image already stored)")
    sub.add_argument("--trust-root", help="set (or rotate to) this signed trust root")
    sub.add_argument("--vendor", help="the vendor id (a UUID; default: the trust root's)")
    sub.add_argument("--class", dest="device_class", help="the device class (a UUID)")
    sub.add_argument("--version", help="the version, for people (2.4.1)")
    sub.add_argument("--sequence", type=int, help="the sequence number (higher than the last)")
    sub.add_argument("--expires", default="365d", help="expiry: 90d, an ISO date... (365d)")
    sub.add_argument("--kind", choices=("normal", "reprogram"), default="normal")
    sub.add_argument("--leaf-size", type=int, default=1024, help="bytes per verified leaf (1024)")
    sub.add_argument("--encrypt", action="store_true", help="publish it confidential (AES-256)")
    sub.add_argument(
        "--recipient", action="append", metavar="PUB", help="a device class's recipient key"
    )
    sub.add_argument("--key", help="sign with this private key")
    sub.add_argument("--passphrase-file", metavar="FILE", help="the private key's passphrase")
    sub.add_argument("--party", help="the party you sign for (default: as the trust root lists)")
    sub.add_argument("--out", help="write the manifest here too (for the other parties)")


def _commit(store: ImageStore, data: bytes, now: float) -> bool:
    """Publish ``data`` if the store's trust root's thresholds are met."""
    message, manifest = open_manifest_untrusted(data)
    root = store_trust_root(store, now)
    if root is None:
        raise CliError("the store has no trust root: publish --trust-root ROOT first")
    report = check_signatures(message, root, root.policy_for(manifest.device_class))
    for line in report.lines():
        print(f"  {line}")
    if not report.met:
        return False
    digest = store.add_manifest(data)
    print(f"published {manifest.version} (sequence {manifest.sequence}) as {digest.hex()}")
    return True


def _publish_trust_root(store: ImageStore, path: str, now: float) -> int:
    data = Path(path).read_bytes()
    current = store_trust_root(store, now)
    try:
        root = (
            accept_trust_root(data, now)
            if current is None
            else rotate_trust_root(current, data, now)
        )
    except ManifestRefused as exc:
        print(f"REFUSED ({type(exc).__name__}): {exc}")
        return 1
    digest = store.set_trust_root(data)
    print(
        f"trust root version {root.version} of vendor {root.vendor_id} is current: {digest.hex()}"
    )
    return 0


def _publish(args: argparse.Namespace) -> int:
    now = time.time()
    store = open_image_store(args.store)
    chosen = [args.image is not None, args.manifest is not None, args.trust_root is not None]
    if sum(chosen) != 1:
        raise UsageError("give exactly one of FILE, --manifest, --trust-root")
    if args.trust_root:
        return _publish_trust_root(store, args.trust_root, now)
    if args.manifest:
        if not _commit(store, Path(args.manifest).read_bytes(), now):
            print("REFUSED: below threshold (collect the missing signatures with dofpy image sign)")
            return 1
        return 0
    for flag in ("device_class", "version", "sequence"):
        if getattr(args, flag) is None:
            raise UsageError(f"publishing an image needs --{flag.replace('device_', '')}")
    if args.encrypt != bool(args.recipient):
        raise UsageError("--encrypt needs --recipient PUB (one or more), and --recipient --encrypt")
    root = store_trust_root(store, now)
    vendor = args.vendor or (None if root is None else str(root.vendor_id))
    if vendor is None:
        raise UsageError("give --vendor (or publish the vendor's trust root first)")
    try:
        vendor_id = uuid.UUID(vendor)
        device_class = uuid.UUID(args.device_class)
    except ValueError as exc:
        raise UsageError(f"a vendor and a class are UUIDs: {exc}") from None
    recipients = [load_recipient_public_key(p) for p in args.recipient or ()]
    key = load_private_key(args.key, _passphrase(args)) if args.key else None
    started = time.perf_counter()
    prepared = add_image_file(store, args.image, args.leaf_size, recipients=recipients)
    elapsed = time.perf_counter() - started
    image = prepared.hashes.manifest
    manifest = ImageManifest(
        vendor_id=vendor_id,
        device_class=device_class,
        version=args.version,
        sequence=args.sequence,
        created=int(now),
        expires=parse_time(args.expires, now),
        image=image,
        kind=ImageKind.REPROGRAM if args.kind == "reprogram" else ImageKind.NORMAL,
        encryption=None if prepared.encryption is None else prepared.encryption.to_cbor_map(),
    )
    size = image.size if prepared.encryption is None else prepared.encryption.plaintext_size
    print(
        f"stored image {image.object_id.hex()} ({size} bytes"
        f"{', encrypted' if prepared.encryption else ''}) in {elapsed:.2f} s"
    )
    if key is None:
        data = manifest.encode()
        print("manifest unsigned: sign it (dofpy image sign), then publish --manifest")
    else:
        party = _signing_party(args, root, key.kid)
        data = sign_manifest(manifest, key, party).encode()
    if args.out:
        write_document(args.out, data, overwrite=True)
        print(f"manifest written to {args.out}")
    if key is not None and not _commit(store, data, now):
        print(
            "staged: thresholds not yet met; the other parties sign the manifest,"
            " then publish --manifest"
        )
    return 0


def _passphrase(args: argparse.Namespace) -> bytes | None:
    if args.passphrase_file is None:
        return None
    return read_passphrase(args.passphrase_file)


def _signing_party(args: argparse.Namespace, root: TrustRoot | None, kid: bytes) -> Party:
    if args.party:
        try:
            return Party.parse(args.party)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    listed = None if root is None else root.key_by_kid(kid)
    if listed is None:
        raise CliError("give --party (your key is not in the store's trust root)")
    return listed.party


# -- list and gc ----------------------------------------------------------------------


def _list_flags(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--store", required=True, help="the image store's folder")
    add_format_flag(sub)


def _when(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(seconds))


def _list(args: argparse.Namespace) -> int:
    store = open_image_store(args.store)
    now = time.time()
    try:
        root = store_trust_root(store, now)
    except ManifestRefused:
        root = None
    records = []
    for entry in store.published():
        summary = entry.summary
        thresholds = "no trust root"
        if root is not None:
            message, manifest = open_manifest_untrusted(store.manifest(entry.digest))
            report = check_signatures(message, root, root.policy_for(manifest.device_class))
            thresholds = "met" if report.met else "NOT met"
        records.append(
            {
                "class": summary.class_id,
                "version": summary.version,
                "sequence": summary.sequence,
                "size": summary.image.size,
                "encrypted": "yes" if summary.encrypted else "no",
                "signers": ", ".join(summary.signers) or "-",
                "thresholds": thresholds,
                "expires": _when(summary.expires)
                + (" (expired)" if (summary.expires or now) < now else ""),
                "latest": "*" if entry.latest else "",
                "manifest": entry.digest.hex()[:16],
            }
        )
    for digest, reason in store.unreadable.items():
        print(f"unreadable manifest {digest.hex()}: {reason}")
    if not records:
        print("no manifests published")
        return 0
    print_records(records, list(records[0]), args.format)
    return 0


def _gc_flags(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--store", required=True, help="the image store's folder")
    sub.add_argument("--keep", type=int, help="keep the newest N manifests per class")
    sub.add_argument(
        "--expired", action="store_true", help="drop expired manifests (never a class's latest)"
    )
    sub.add_argument("--dry-run", action="store_true", help="say what would go, remove nothing")


def _gc(args: argparse.Namespace) -> int:
    store = open_image_store(args.store)
    try:
        report = store.gc(
            keep=args.keep,
            expired_before=time.time() if args.expired else None,
            dry_run=args.dry_run,
        )
    except ValueError as exc:
        raise CliError(str(exc)) from None
    verb = "would remove" if args.dry_run else "removed"
    print(
        f"{verb} {len(report.manifests)} manifests, {len(report.images)} images, "
        f"{len(report.records)} key records ({report.bytes_freed} bytes)"
    )
    for digest in report.manifests:
        print(f"  manifest {digest.hex()}")
    for digest in report.images:
        print(f"  image {digest.hex()}")
    return 0


# -- fetch ----------------------------------------------------------------------------


def _fetch_flags(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--provider", action="append", required=True, metavar="HOST:PORT")
    sub.add_argument("--class", dest="device_class", required=True, help="the device class")
    sub.add_argument("--trust-root", required=True, help="the device's trust root (signed)")
    sub.add_argument("--out", required=True, help="where the image is installed (atomically)")
    sub.add_argument("--staging", help="fetch into this folder first (resumable; default OUT.d)")
    sub.add_argument("--installed-sequence", type=int, default=0)
    sub.add_argument("--recipient-key", help="the device class's recipient key (confidential)")
    sub.add_argument("--credentials", help="this node's credentials file (secure sessions)")
    sub.add_argument(
        "--allow-plaintext", action="store_true", help="no secure session (loopback tests only)"
    )
    sub.add_argument("--timeout", type=float, default=600.0, help="give up after S seconds")


def _fetch(args: argparse.Namespace) -> int:
    now = time.time()
    try:
        root = accept_trust_root(Path(args.trust_root).read_bytes(), now)
        device_class = uuid.UUID(args.device_class)
    except (ManifestRefused, ValueError) as exc:
        raise CliError(f"cannot use the trust root or class: {exc}") from None
    providers = [parse_address(p) for p in args.provider]
    key = load_recipient_private_key(args.recipient_key) if args.recipient_key else None
    device = DeviceState(root.vendor_id, device_class, args.installed_sequence)
    staging = Path(args.staging or f"{args.out}.d")
    if args.credentials:
        node = load_credentials(args.credentials).node_config()
        config = TransferConfig(oap=OapConfig(node=node))
    elif args.allow_plaintext:
        config = TransferConfig()
    else:
        raise UsageError("give --credentials (or --allow-plaintext on a loopback test)")

    def verify(data: bytes) -> ManifestSummary:
        verified = verify_manifest(data, root, device, time.time())
        return summary_of_verified(data, verified)

    async def run() -> int:
        async with open_transfer_node(config=config, allow_plaintext=args.allow_plaintext) as node:
            with trio.fail_after(args.timeout):
                fetched = await fetch_image(
                    node,
                    providers,
                    device_class,
                    verify,
                    args.out,
                    staging=staging,
                    recipient_key=key,
                    encryption_of=encryption_of,
                )
        print(
            f"installed {fetched.summary.version} (sequence {fetched.summary.sequence}), "
            f"{fetched.size} bytes -> {args.out}"
        )
        return 0

    try:
        status = trio.run(run)
    except ManifestRefused as exc:
        print(f"REFUSED ({type(exc).__name__}): {exc}")
        return 1
    except (DofError, BadPacket, trio.TooSlowError) as exc:
        raise CliError(f"fetch failed: {exc or type(exc).__name__}") from None
    with contextlib.suppress(OSError):
        staging.rmdir()
    return status


STORE_COMMANDS: tuple[Command, ...] = (
    Command(
        "recipient-keygen",
        "create a device class's X25519 recipient key pair (for confidential images)",
        "dofpy image recipient-keygen keys/sensor-v2",
        _recipient_keygen_flags,
        _recipient_keygen,
    ),
    Command(
        "publish",
        "store an image and its manifest (or publish a signed manifest, or the trust root)",
        "dofpy image publish fw-2.4.bin --store /srv/images --class 6f1c... --version 2.4 "
        "--sequence 24 --key keys/alice --out fw-2.4.manifest\n"
        "  dofpy image publish --manifest fw-2.4.manifest --store /srv/images",
        _publish_flags,
        _publish,
    ),
    Command(
        "list",
        "the published manifests: classes, versions, sizes, signers, expiry",
        "dofpy image list --store /srv/images",
        _list_flags,
        _list,
    ),
    Command(
        "gc",
        "remove what no manifest references (and old or expired manifests if asked)",
        "dofpy image gc --store /srv/images --keep 3 --expired",
        _gc_flags,
        _gc,
    ),
    Command(
        "fetch",
        "fetch the latest image of a class, verified as a device would, and install it",
        "dofpy image fetch --provider 192.0.2.7:3567 --class 6f1c... --trust-root root.cose "
        "--credentials device.toml --out /var/lib/fw/next.bin",
        _fetch_flags,
        _fetch,
    ),
)
"""The store's commands, in the order ``dofpy image --help`` lists them."""
