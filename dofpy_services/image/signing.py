"""The offline ``dofpy image`` commands: keys, trust roots, signing and
verifying manifests. They need no network and no store: a party signs on
its own machine, and the files travel by any means.

- ``dofpy image keygen NAME [--algorithm ed25519|es256] [--passphrase-file F]``
- ``dofpy image trust-root init --vendor UUID --key PUB:PARTY[:NAME]... --threshold PARTY=N...``
- ``dofpy image trust-root add-key ROOT --party P --public-key PUB [--name N]``
- ``dofpy image trust-root remove-key ROOT (--kid HEX | --public-key PUB)``
- ``dofpy image trust-root sign ROOT --key K [--current OLD]``
- ``dofpy image trust-root verify ROOT [--current OLD]``
- ``dofpy image sign MANIFEST --key K --party P``
- ``dofpy image verify MANIFEST --trust-root ROOT [--image FILE]``

A document file is either *unsigned* (the bare CBOR payload: a draft) or
signed (a tagged COSE message). Editing a signed trust root starts a draft of
the next version; signing a draft makes it a ``COSE_Sign``; signing a signed
``COSE_Sign`` adds a signature. Verification exits 1 when refused.
"""

from __future__ import annotations

import argparse
import re
import time
import uuid
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from dofpy.errors import BadPacket
from dofpy.image.cose import (
    Algorithm,
    CoseSigned,
    SigningKey,
    decode_cose_untrusted,
)
from dofpy.image.errors import ManifestRefused
from dofpy.image.manifest import (
    MANIFEST_CONTENT_TYPE,
    ImageManifest,
    decode_image_manifest_untrusted,
)
from dofpy.image.trust import (
    TRUST_ROOT_CONTENT_TYPE,
    Party,
    SignatureReport,
    TrustedKey,
    TrustRoot,
    accept_trust_root,
    check_signatures,
    decode_trust_root_untrusted,
    describe_policy,
    format_time,
    rotate_trust_root,
    sign_trust_root,
)
from dofpy.image.verify import DeviceState, ImageCheck, sign_manifest, verify_manifest
from dofpy_services.daemon.cli import CliError, UsageError
from dofpy_services.daemon.service import Command
from dofpy_services.image.keys import (
    load_private_key,
    load_public_key,
    read_passphrase,
    write_document,
    write_private_key,
    write_public_key,
)

__all__ = ["SIGNING_COMMANDS", "load_trust_root", "parse_time"]

_READ_CHUNK = 1 << 20
_DURATION = re.compile(r"^(\d+)([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_time(text: str, now: float) -> int:
    """An absolute time as POSIX seconds from ``365d`` (from ``now``; also s,
    m, h, w), an ISO 8601 date or time (UTC unless it says), or plain seconds."""
    text = text.strip()
    if match := _DURATION.match(text):
        return int(now) + int(match.group(1)) * _UNITS[match.group(2)]
    if text.isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(
            f"bad time {text!r}: give a duration (365d, 12h), an ISO date or POSIX seconds"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp())


def _uuid(text: str, what: str) -> uuid.UUID:
    try:
        return uuid.UUID(text)
    except ValueError:
        raise UsageError(f"bad {what} {text!r}: expected a UUID") from None


def _party(text: str) -> Party:
    try:
        return Party.parse(text)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _thresholds(entries: Sequence[str] | None, what: str) -> dict[Party, int]:
    policy: dict[Party, int] = {}
    for entry in entries or ():
        party, _, count = entry.partition("=")
        if not count.isdigit():
            raise UsageError(f"bad {what} {entry!r}: expected PARTY=N, e.g. manufacturer=2")
        policy[_party(party)] = int(count)
    return policy


def _passphrase(args: argparse.Namespace) -> bytes | None:
    path = getattr(args, "passphrase_file", None)
    return None if path is None else read_passphrase(path)


# -- documents on disk ----------------------------------------------------------------


def _is_signed(data: bytes) -> bool:
    return data.startswith(b"\xd2") or data.startswith(b"\xd8\x62")


def _read(path: str) -> bytes:
    return Path(path).read_bytes()


def _signed(data: bytes, path: str, content_type: str) -> CoseSigned:
    try:
        message = decode_cose_untrusted(data)
    except BadPacket as exc:
        raise CliError(f"{path} is not a signed document: {exc}") from None
    if message.content_type != content_type:
        raise CliError(f"{path} holds {message.content_type!r}, not {content_type!r}")
    return message


def _root_document(path: str) -> tuple[TrustRoot, CoseSigned | None]:
    """A trust root file's content and, when it is signed, its COSE message."""
    data = _read(path)
    try:
        if _is_signed(data):
            message = _signed(data, path, TRUST_ROOT_CONTENT_TYPE)
            return decode_trust_root_untrusted(message.payload), message
        return decode_trust_root_untrusted(data), None
    except BadPacket as exc:
        raise CliError(f"{path} is not a trust root: {exc}") from None


def load_trust_root(path: str, now: float) -> TrustRoot:
    """A signed trust root file, accepted on its own signatures
    (:func:`~dofpy.image.trust.accept_trust_root`): what ``verify`` and the
    store's commands trust. Raises ``ManifestRefused`` or ``CliError``."""
    data = _read(path)
    if not _is_signed(data):
        raise CliError(f"{path} is an unsigned trust root draft: sign it first (trust-root sign)")
    return accept_trust_root(data, now)


def _print_report(title: str, report: SignatureReport) -> None:
    print(title)
    for line in report.lines():
        print(f"  {line}")


# -- keygen --------------------------------------------------------------------------


def _keygen_flags(sub: argparse.ArgumentParser) -> None:
    sub.add_argument(
        "name", metavar="NAME", help="private key file; the public key goes to NAME.pub"
    )
    sub.add_argument(
        "--algorithm",
        choices=("ed25519", "es256"),
        default="ed25519",
        help="Ed25519 (default) or ECDSA P-256 (ES256) for devices without Ed25519",
    )
    sub.add_argument(
        "--passphrase-file", metavar="FILE", help="encrypt the private key with this passphrase"
    )


def _keygen(args: argparse.Namespace) -> int:
    algorithm = Algorithm.EDDSA if args.algorithm == "ed25519" else Algorithm.ES256
    public_path = Path(f"{args.name}.pub")
    if public_path.exists():
        raise CliError(f"{public_path} exists; refusing to overwrite a key")
    key = SigningKey.generate(algorithm)
    private = write_private_key(args.name, key, _passphrase(args))
    public = write_public_key(public_path, key.public_key)
    print(f"private key written to {private} (mode 0600)")
    print(f"public key written to {public}")
    print(f"key id: {key.kid.hex()} ({algorithm.label})")
    return 0


# -- trust roots ----------------------------------------------------------------------


def _write_root_draft(root: TrustRoot, path: str, overwrite: bool) -> None:
    write_document(path, root.encode(), overwrite=overwrite)
    print(f"trust root draft version {root.version} written to {path} (unsigned)")
    print(f"  vendor {root.vendor_id}, expires {format_time(root.expires)}")
    print(f"  manifests need {describe_policy(root.policy)}")
    for device_class, policy in root.class_policies.items():
        print(f"  manifests of class {device_class} need {describe_policy(policy)}")
    print(f"  trust roots need {describe_policy(root.root_policy)}")
    for key in root.keys:
        print(f"  {key.describe()}")
    print("sign it with: dofpy image trust-root sign " + path + " --key KEY")


def _init_flags(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--vendor", required=True, help="the vendor id (a UUID)")
    sub.add_argument(
        "--key",
        action="append",
        required=True,
        metavar="PUB:PARTY[:NAME]",
        help="a public key file and its party (repeatable), e.g. alice.pub:manufacturer:alice",
    )
    sub.add_argument(
        "--threshold",
        action="append",
        required=True,
        metavar="PARTY=N",
        help="signatures a manifest needs from a party (repeatable)",
    )
    sub.add_argument(
        "--class-threshold",
        action="append",
        metavar="CLASS:PARTY=N",
        help="thresholds for one device class instead of the default (repeatable)",
    )
    sub.add_argument(
        "--root-threshold",
        action="append",
        metavar="PARTY=N",
        help="signatures a trust root needs from a party (default: as --threshold)",
    )
    sub.add_argument(
        "--expires", default="365d", help="expiry: 365d, an ISO date... (default 365d)"
    )
    sub.add_argument("--out", required=True, help="the trust root draft to write")


def _class_thresholds(entries: Sequence[str] | None) -> dict[uuid.UUID, dict[Party, int]]:
    classes: dict[uuid.UUID, dict[Party, int]] = {}
    for entry in entries or ():
        device_class, _, rest = entry.partition(":")
        classes.setdefault(_uuid(device_class, "device class"), {}).update(
            _thresholds([rest], "class threshold")
        )
    return classes


def _init(args: argparse.Namespace) -> int:
    keys = []
    for entry in args.key:
        path, _, rest = entry.partition(":")
        party, _, name = rest.partition(":")
        if not party:
            raise UsageError(f"bad --key {entry!r}: expected PUB:PARTY[:NAME]")
        keys.append(TrustedKey(_party(party), load_public_key(path), name))
    policy = _thresholds(args.threshold, "threshold")
    vendor = _uuid(args.vendor, "vendor")
    expires = parse_time(args.expires, time.time())
    root_policy = _thresholds(args.root_threshold, "root threshold") or policy
    class_policies = _class_thresholds(args.class_threshold)
    try:
        root = TrustRoot(
            vendor_id=vendor,
            version=1,
            expires=expires,
            keys=tuple(keys),
            policy=policy,
            root_policy=root_policy,
            class_policies=class_policies,
        )
    except ValueError as exc:
        # Everything here came from the options: they do not fit together.
        raise UsageError(str(exc)) from None
    _write_root_draft(root, args.out, overwrite=False)
    return 0


def _edit_flags(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("root", metavar="ROOT", help="a trust root: signed (the current) or a draft")
    sub.add_argument(
        "--out", help="where the draft goes (default: ROOT itself when ROOT is a draft)"
    )
    sub.add_argument("--expires", help="a new expiry (365d, an ISO date...)")


def _draft_to_edit(args: argparse.Namespace) -> tuple[TrustRoot, str, bool]:
    root, message = _root_document(args.root)
    if message is not None:
        # Editing the signed current root starts the next version.
        if not args.out:
            raise UsageError(f"{args.root} is signed: give --out for the draft of the next version")
        root = root.next_version()
    if args.expires:
        root = replace(root, expires=parse_time(args.expires, time.time()))
    out = args.out or args.root
    return root, out, out == args.root


def _add_key_flags(sub: argparse.ArgumentParser) -> None:
    _edit_flags(sub)
    sub.add_argument("--party", required=True, help="the key's party")
    sub.add_argument("--public-key", required=True, metavar="PUB", help="the public key file")
    sub.add_argument("--name", default="", help="whose key it is, for people")
    sub.add_argument("--threshold", action="append", metavar="PARTY=N", help="new thresholds")


def _add_key(args: argparse.Namespace) -> int:
    root, out, overwrite = _draft_to_edit(args)
    root = root.with_key(_party(args.party), load_public_key(args.public_key), args.name)
    if args.threshold:
        root = root.with_policy(policy={**root.policy, **_thresholds(args.threshold, "threshold")})
    _write_root_draft(root, out, overwrite)
    return 0


def _remove_key_flags(sub: argparse.ArgumentParser) -> None:
    _edit_flags(sub)
    which = sub.add_mutually_exclusive_group(required=True)
    which.add_argument("--kid", help="the key id (hex; a unique prefix is enough)")
    which.add_argument("--public-key", metavar="PUB", help="the public key file")


def _remove_key(args: argparse.Namespace) -> int:
    root, out, overwrite = _draft_to_edit(args)
    if args.public_key:
        kid = load_public_key(args.public_key).kid
    else:
        matches = [k.kid for k in root.keys if k.kid.hex().startswith(args.kid.lower())]
        if len(matches) != 1:
            raise CliError(f"--kid {args.kid} matches {len(matches)} listed keys (need one)")
        kid = matches[0]
    _write_root_draft(root.without_key(kid), out, overwrite)
    return 0


def _sign_root_flags(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("root", metavar="ROOT", help="the trust root to sign (a draft or signed)")
    sub.add_argument("--key", required=True, help="your private key file")
    sub.add_argument("--passphrase-file", metavar="FILE", help="the private key's passphrase")
    sub.add_argument(
        "--party", help="the party you sign for (default: the key's party in ROOT or --current)"
    )
    sub.add_argument(
        "--current", metavar="OLD", help="the trust root ROOT replaces (a rotation): its keys sign"
    )
    sub.add_argument("--out", help="write here instead of updating ROOT in place")


def _root_status(new: TrustRoot, message: CoseSigned, current: TrustRoot | None) -> bool:
    """Print the signatures' tallies; whether every threshold is met."""
    met = True
    if current is not None:
        by_old = check_signatures(
            message, current, current.root_policy, other_root={k.kid for k in new.keys}
        )
        _print_report(f"thresholds of the current trust root (version {current.version}):", by_old)
        met = by_old.met
    own = check_signatures(
        message,
        new,
        new.root_policy,
        other_root={k.kid for k in current.keys} if current is not None else (),
    )
    _print_report(f"thresholds of trust root version {new.version} itself:", own)
    return met and own.met


def _sign_root(args: argparse.Namespace) -> int:
    root, message = _root_document(args.root)
    current = _root_document(args.current)[0] if args.current else None
    key = load_private_key(args.key, _passphrase(args))
    if args.party:
        party = _party(args.party)
    else:
        listed = root.key_by_kid(key.kid) or (current.key_by_kid(key.kid) if current else None)
        if listed is None:
            raise CliError(
                f"key {key.public_key.fingerprint} is not listed in {args.root}"
                + (f" or {args.current}" if args.current else "")
                + ": give --party"
            )
        party = listed.party
    signed = sign_trust_root(root if message is None else message, key, party)
    out = args.out or args.root
    write_document(out, signed.encode(), overwrite=True)
    print(f"signed trust root version {root.version} as {party.label} -> {out}")
    met = _root_status(root, signed, current)
    print("every threshold is met" if met else "more signatures are needed")
    return 0


def _verify_root_flags(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("root", metavar="ROOT", help="a signed trust root")
    sub.add_argument(
        "--current", metavar="OLD", help="check ROOT as a rotation from this trusted root"
    )
    sub.add_argument("--at", help="check as of this time instead of now (an ISO date, 30d...)")


def _at(args: argparse.Namespace) -> float:
    now = time.time()
    return now if args.at is None else float(parse_time(args.at, now))


def _verify_root(args: argparse.Namespace) -> int:
    now = _at(args)
    data = _read(args.root)
    root, message = _root_document(args.root)
    current = load_trust_root(args.current, now) if args.current else None
    if message is None:
        print(f"{args.root} is an unsigned draft (version {root.version})")
        return 1
    _root_status(root, message, current)
    try:
        if current is None:
            accept_trust_root(data, now)
        else:
            rotate_trust_root(current, data, now)
    except ManifestRefused as exc:
        print(f"REFUSED ({type(exc).__name__}): {exc}")
        return 1
    what = f"rotation from version {current.version}" if current else "trust root"
    print(f"ACCEPTED: {what} to version {root.version}, expires {format_time(root.expires)}")
    return 0


def _trust_root_flags(sub: argparse.ArgumentParser) -> None:
    actions = sub.add_subparsers(dest="trust_root_action", required=True, metavar="ACTION")
    for name, help_text, flags, run in (
        ("init", "write a vendor's first trust root (a draft to sign)", _init_flags, _init),
        ("add-key", "add a party's key (a draft of the next version)", _add_key_flags, _add_key),
        (
            "remove-key",
            "remove a key, e.g. a compromised one (a draft of the next version)",
            _remove_key_flags,
            _remove_key,
        ),
        ("sign", "add your signature to a trust root", _sign_root_flags, _sign_root),
        (
            "verify",
            "check a trust root's signatures (and a rotation with --current)",
            _verify_root_flags,
            _verify_root,
        ),
    ):
        action = actions.add_parser(name, help=help_text, description=help_text)
        flags(action)
        action.set_defaults(trust_root_run=run)


def _trust_root(args: argparse.Namespace) -> int:
    code: int = args.trust_root_run(args)
    return code


# -- manifests ------------------------------------------------------------------------


def _manifest_document(path: str) -> tuple[ImageManifest, CoseSigned | None]:
    data = _read(path)
    try:
        if _is_signed(data):
            message = _signed(data, path, MANIFEST_CONTENT_TYPE)
            return decode_image_manifest_untrusted(message.payload), message
        return decode_image_manifest_untrusted(data), None
    except BadPacket as exc:
        raise CliError(f"{path} is not an image manifest: {exc}") from None


def _sign_flags(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("manifest", metavar="MANIFEST", help="a manifest: unsigned, or a COSE_Sign")
    sub.add_argument("--key", required=True, help="your private key file")
    sub.add_argument("--passphrase-file", metavar="FILE", help="the private key's passphrase")
    sub.add_argument("--party", help="the party you sign for (or give --trust-root)")
    sub.add_argument(
        "--trust-root", metavar="ROOT", help="look your key's party up in this trust root"
    )
    sub.add_argument(
        "--single",
        action="store_true",
        help="sign an unsigned manifest as a COSE_Sign1 (one signer; no more can sign)",
    )
    sub.add_argument("--out", help="write here instead of updating MANIFEST in place")


def _sign(args: argparse.Namespace) -> int:
    manifest, message = _manifest_document(args.manifest)
    key = load_private_key(args.key, _passphrase(args))
    root = _root_document(args.trust_root)[0] if args.trust_root else None
    if args.party:
        party = _party(args.party)
    elif root is not None and (listed := root.key_by_kid(key.kid)) is not None:
        party = listed.party
    else:
        raise UsageError("give --party (or --trust-root listing your key)")
    if message is not None and args.single:
        raise UsageError("--single applies to an unsigned manifest only")
    try:
        signed = sign_manifest(
            manifest if message is None else message, key, party, single=args.single
        )
    except ValueError as exc:
        raise CliError(f"{args.manifest}: {exc}") from None
    out = args.out or args.manifest
    write_document(out, signed.encode(), overwrite=True)
    form = "COSE_Sign1" if signed.single else f"COSE_Sign, {len(signed.signatures)} signatures"
    print(
        f"signed manifest {manifest.version} (sequence {manifest.sequence}) as {party.label} "
        f"with key {key.public_key.fingerprint} -> {out} ({form})"
    )
    if root is not None:
        report = check_signatures(signed, root, root.policy_for(manifest.device_class))
        _print_report(f"thresholds of trust root version {root.version}:", report)
    return 0


def _verify_flags(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("manifest", metavar="MANIFEST", help="a signed manifest")
    sub.add_argument("--trust-root", required=True, metavar="ROOT", help="the vendor's trust root")
    sub.add_argument("--image", metavar="FILE", help="also check this image against the manifest")
    sub.add_argument(
        "--class",
        dest="device_class",
        help="the device class to check for (default: the manifest's own)",
    )
    sub.add_argument(
        "--installed-sequence",
        type=int,
        default=0,
        help="the sequence the device runs: refuse a manifest not newer (default 0)",
    )
    sub.add_argument("--at", help="check as of this time instead of now (an ISO date, 30d...)")


def _verify(args: argparse.Namespace) -> int:
    now = _at(args)
    data = _read(args.manifest)
    if not _is_signed(data):
        print(f"REFUSED: {args.manifest} is not signed")
        return 1
    try:
        root = load_trust_root(args.trust_root, now)
    except ManifestRefused as exc:
        print(f"REFUSED: the trust root {args.trust_root} is not acceptable: {exc}")
        return 1
    manifest, message = _manifest_document(args.manifest)
    assert message is not None
    device_class = (
        _uuid(args.device_class, "device class") if args.device_class else manifest.device_class
    )
    print(
        f"manifest {manifest.version} (sequence {manifest.sequence}), kind "
        f"{manifest.kind.name.lower()}, vendor {manifest.vendor_id}, class "
        f"{manifest.device_class}"
    )
    print(
        f"  image {manifest.image.size} bytes, SHA-256 {manifest.image.object_id.hex()}, "
        f"created {format_time(manifest.created)}, expires {format_time(manifest.expires)}"
    )
    form = "COSE_Sign1" if message.single else "COSE_Sign"
    report = check_signatures(message, root, root.policy_for(device_class))
    _print_report(
        f"signatures ({form}) against trust root version {root.version} "
        f"(needs {describe_policy(root.policy_for(device_class))}):",
        report,
    )
    device = DeviceState(root.vendor_id, device_class, args.installed_sequence)
    try:
        verified = verify_manifest(data, root, device, now)
        if args.image:
            check = ImageCheck(verified.manifest)
            with Path(args.image).open("rb") as file:
                while chunk := file.read(_READ_CHUNK):
                    check.update(chunk)
            check.finish()
    except ManifestRefused as exc:
        print(f"REFUSED ({type(exc).__name__}): {exc}")
        return 1
    suffix = f"; image {args.image} matches" if args.image else ""
    print(f"ACCEPTED: every threshold is met{suffix}")
    return 0


SIGNING_COMMANDS: tuple[Command, ...] = (
    Command(
        "keygen",
        "create a signing key pair (private key file mode 0600)",
        "dofpy image keygen keys/alice --algorithm ed25519 --passphrase-file alice.pass",
        _keygen_flags,
        _keygen,
    ),
    Command(
        "trust-root",
        "create, edit, sign and check a vendor's trust root (init|add-key|remove-key|sign|verify)",
        "dofpy image trust-root init --vendor 6f1c...  --key alice.pub:manufacturer:alice "
        "--key sp.pub:service-provider --threshold manufacturer=1 --threshold "
        "service-provider=1 --out root.cbor\n"
        "  dofpy image trust-root sign root.cbor --key alice",
        _trust_root_flags,
        _trust_root,
    ),
    Command(
        "sign",
        "add your signature to a manifest (offline)",
        "dofpy image sign release-2.4.manifest --key keys/sp --party service-provider",
        _sign_flags,
        _sign,
    ),
    Command(
        "verify",
        "check a manifest as a device would; prints who signed; exit 1 when refused",
        "dofpy image verify release-2.4.manifest --trust-root root.cbor --image fw-2.4.bin",
        _verify_flags,
        _verify,
    ),
)
"""The offline commands, in the order ``dofpy image --help`` lists them."""
