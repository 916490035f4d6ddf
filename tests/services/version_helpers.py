"""Reports, devices and filters shared by the Version service's tests."""

from __future__ import annotations

from dofpy.wire.oid import OID
from dofpy_services.version.interface import BootState, ImageKind, QueryFilter, VersionReport
from dofpy_services.version.store import SyncVersionStore


def device(number: int) -> OID:
    return OID(3, f"device-{number:05d}@example.org".encode())


def report(
    device_class: str = "sensor",
    version: str = "1.0",
    sequence: int = 10,
    *,
    accepted: bool = True,
    slot: int = 0,
    boot_count: int = 1,
    free_storage: int = 1 << 20,
    clock: float = 1000.0,
) -> VersionReport:
    return VersionReport(
        device_class=device_class,
        version=version,
        sequence=sequence,
        image_digest=bytes([sequence % 256]) * 32,
        boot=BootState(slot, ImageKind.NORMAL, accepted, boot_count),
        free_storage=free_storage,
        device_clock=clock,
    )


def fleet(store: SyncVersionStore, count: int = 60) -> dict[OID, tuple[VersionReport, float]]:
    """``count`` devices of two classes and three versions, some running an
    unaccepted image, seen at times 100 + n; what each reported and when."""
    reported = {}
    for n in range(count):
        version, sequence = [("1.0", 10), ("1.1", 11), ("2.0", 20)][n % 3]
        sent = report("sensor" if n % 2 == 0 else "gateway", version, sequence, accepted=n % 5 != 0)
        store.report(device(n), sent, 100.0 + n)
        reported[device(n)] = (sent, 100.0 + n)
    return reported


def matches(query: QueryFilter, sent: VersionReport, seen: float, identity: OID) -> bool:
    """Whether a device matches ``query``: the filter's meaning, in Python."""
    checks = [
        query.device_class is None or sent.device_class == query.device_class,
        query.version is None or sent.version == query.version,
        query.not_version is None or sent.version != query.not_version,
        query.min_sequence is None or sent.sequence >= query.min_sequence,
        query.max_sequence is None or sent.sequence <= query.max_sequence,
        query.last_seen_before is None or seen < query.last_seen_before,
        query.last_seen_after is None or seen >= query.last_seen_after,
        query.accepted is None or sent.boot.accepted == query.accepted,
        query.image_kind is None or sent.boot.image_kind == query.image_kind,
        not query.identities or identity in query.identities,
    ]
    return all(checks)


FILTERS = (
    QueryFilter(),
    QueryFilter(device_class="sensor"),
    QueryFilter(device_class="sensor", version="1.1"),
    QueryFilter(device_class="sensor", not_version="2.0"),
    QueryFilter(device_class="gateway", min_sequence=11, max_sequence=20),
    QueryFilter(min_sequence=11),
    QueryFilter(last_seen_before=120.0),
    QueryFilter(last_seen_after=140.0),
    QueryFilter(accepted=False),
    QueryFilter(device_class="sensor", accepted=False),
    QueryFilter(image_kind=ImageKind.REPROGRAM),
    QueryFilter(identities=(device(3), device(7), device(999))),
    QueryFilter(device_class="gateway", not_version="1.0", last_seen_before=150.0, accepted=True),
)
"""Every kind of filter, and combinations."""
