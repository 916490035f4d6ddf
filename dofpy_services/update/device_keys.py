"""The Update service's device table: the report keys of enrolled devices,
and the signed install reports they sent (kept as sent, for the record).

A device's install report is signed with its own Ed25519 key
(:func:`~dofpy_services.update.device_interface.sign_install_report`); the
Update service verifies it against the public key registered here when the
device was enrolled (``dofpy update device enrol IDENTITY --report-key
PUB.pem --db CAMPAIGNS``, or :func:`enrol_key` from a provisioning tool).
The table lives in the campaign store (migration 2), so every Update
process sharing the store sees the same keys. A device without a key has
its reports refused (its success still counts from the Version service).

Every function takes a :class:`~dofpy_services.store.Transaction`.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from dofpy.errors import BadPacket
from dofpy.wire.oid import parse_oid_text_untrusted
from dofpy_services.daemon.cli import CliError, UsageError
from dofpy_services.store import Migration, StoreError, Transaction, open_database_sync

__all__ = [
    "DEVICE_KEYS_MIGRATION",
    "add_device_flags",
    "device_key",
    "enrol_key",
    "install_reports",
    "keep_install_report",
    "raw_public_key",
    "run_device_command",
]

_SCHEMA = """
CREATE TABLE update_device_keys (
    device TEXT PRIMARY KEY,
    public_key BLOB NOT NULL,
    enrolled_at DOUBLE PRECISION NOT NULL
);
CREATE TABLE update_install_reports (
    campaign TEXT NOT NULL,
    device TEXT NOT NULL,
    signature BLOB NOT NULL,
    report BLOB NOT NULL,
    received_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (campaign, device, signature)
);
"""

DEVICE_KEYS_MIGRATION = Migration(
    2,
    "enrolled devices' report keys, and their signed install reports",
    _SCHEMA,
    _SCHEMA.replace("BLOB", "BYTEA").replace("TEXT NOT NULL", 'TEXT COLLATE "C" NOT NULL'),
)


def enrol_key(tx: Transaction, device: str, public_key: bytes, *, now: float) -> None:
    """Register (or replace: a re-enrolled device) ``device``'s raw 32-byte
    Ed25519 report key."""
    if len(public_key) != 32:
        raise ValueError("an Ed25519 public key has 32 bytes")
    tx.execute("DELETE FROM update_device_keys WHERE device = ?", (device,))
    tx.execute(
        "INSERT INTO update_device_keys (device, public_key, enrolled_at) VALUES (?, ?, ?)",
        (device, public_key, now),
    )


def device_key(tx: Transaction, device: str) -> bytes | None:
    row = tx.row("SELECT public_key FROM update_device_keys WHERE device = ?", (device,))
    return None if row is None else bytes(row[0])


def keep_install_report(
    tx: Transaction, campaign: str, device: str, report: bytes, signature: bytes, *, now: float
) -> bool:
    """Keep a verified report as sent; False if it was kept before (a device
    repeats a report whose answer it lost)."""
    if tx.row(
        "SELECT 1 FROM update_install_reports WHERE campaign = ? AND device = ? AND signature = ?",
        (campaign, device, signature),
    ):
        return False
    tx.execute(
        "INSERT INTO update_install_reports (campaign, device, signature, report, received_at)"
        " VALUES (?, ?, ?, ?, ?)",
        (campaign, device, signature, report, now),
    )
    return True


def install_reports(tx: Transaction, campaign: str) -> list[tuple[str, bytes, bytes]]:
    """(device, report, signature) of every report kept for ``campaign``."""
    rows = tx.rows(
        "SELECT device, report, signature FROM update_install_reports WHERE campaign = ?"
        " ORDER BY received_at, device",
        (campaign,),
    )
    return [(r[0], bytes(r[1]), bytes(r[2])) for r in rows]


def raw_public_key(path: str | Path) -> bytes:
    """The raw 32 bytes of an Ed25519 public key file (PEM), or of the public
    half of an Ed25519 private key file (PEM, unencrypted)."""
    data = Path(path).read_bytes()
    try:
        key: object = serialization.load_pem_public_key(data)
    except ValueError:
        try:
            key = serialization.load_pem_private_key(data, password=None).public_key()
        except (ValueError, TypeError):
            raise ValueError(f"{path}: not a PEM Ed25519 key") from None
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise ValueError(f"{path}: not an Ed25519 key")
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


# -- dofpy update device enrol ----------------------------------------------------------


def add_device_flags(sub: argparse.ArgumentParser) -> None:
    actions = sub.add_subparsers(dest="action", required=True)
    enrol = actions.add_parser("enrol", help="register a device's install-report key")
    enrol.add_argument("identity", help="the device's identity, as in its credentials")
    enrol.add_argument("--report-key", required=True, help="its Ed25519 key (PEM public key)")
    enrol.add_argument("--db", required=True, help="the campaign store (SQLite file or URL)")


def run_device_command(args: argparse.Namespace) -> int:
    from dofpy_services.update import campaign_store as cs  # noqa: PLC0415 (imports this one)

    try:
        identity = parse_oid_text_untrusted(args.identity)
    except BadPacket as exc:
        raise UsageError(f"identity: {exc}") from None
    try:
        public_key = raw_public_key(args.report_key)
    except (OSError, ValueError) as exc:
        raise CliError(str(exc)) from None
    try:
        with open_database_sync(args.db, service=cs.SERVICE, migrations=cs.MIGRATIONS) as db:
            db.write(lambda tx: enrol_key(tx, str(identity), public_key, now=time.time()))
    except StoreError as exc:
        raise CliError(str(exc)) from None
    print(f"enrolled the report key of {identity}")
    return 0
