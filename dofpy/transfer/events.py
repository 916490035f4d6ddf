"""The transfer core's configuration, events and statistics."""

from __future__ import annotations

from dataclasses import dataclass, field

from dofpy.errors import DofError
from dofpy.oap.core import OapConfig
from dofpy.transfer.cache import CacheStatistics
from dofpy.transfer.receiver import ReceiverConfig, ReceiverStatistics
from dofpy.transfer.sender import SenderConfig

__all__ = [
    "ServedStatistics",
    "TransferCompleted",
    "TransferConfig",
    "TransferEvent",
    "TransferFailed",
    "TransferStatistics",
]


@dataclass(frozen=True, slots=True)
class TransferConfig:
    """Configuration: the OAP core's, the provider's and requestors' defaults,
    the provider-wide rate cap (bytes/s, 1 Gbit/s by default; ``None``: none),
    the block cache size, the senders kept (in all and per requestor), and the
    address tokens of plaintext requestors: their key (32 bytes; ``None``: a
    random one per core) and how long one stays valid (s). A relay whose
    upstream transfer failed starts it again after ``relay_retry_initial``
    seconds, doubled after each failure in a row up to ``relay_retry_max``,
    each delay drawn in its upper half (jitter). A finished transfer is
    forgotten (its final statistics are in its event); the last
    ``finished_kept`` stay inspectable (:meth:`TransferCore.receiver`,
    :meth:`TransferCore.transfer_statistics`)."""

    oap: OapConfig = field(default_factory=OapConfig)
    sender: SenderConfig = field(default_factory=SenderConfig)
    receiver: ReceiverConfig = field(default_factory=ReceiverConfig)
    provider_rate_cap: float | None = 125_000_000.0
    cache_bytes: int = 16 << 20
    max_senders: int = 4096
    max_senders_per_peer: int = 256
    address_token_key: bytes | None = field(default=None, repr=False)
    address_token_lifetime: float = 600.0
    relay_retry_initial: float = 0.5
    relay_retry_max: float = 30.0
    finished_kept: int = 16

    def __post_init__(self) -> None:
        if not 0 < self.relay_retry_initial <= self.relay_retry_max:
            raise ValueError("need 0 < relay_retry_initial <= relay_retry_max")
        if self.provider_rate_cap is not None and self.provider_rate_cap <= 0:
            raise ValueError("provider_rate_cap must be > 0")
        if self.max_senders < 1 or self.max_senders_per_peer < 1:
            raise ValueError("max_senders and max_senders_per_peer must be >= 1")
        if self.address_token_key is not None and len(self.address_token_key) != 32:
            raise ValueError("address_token_key must be 32 bytes")
        if self.address_token_lifetime < 10.0:
            raise ValueError("address_token_lifetime must be >= 10 s")
        if self.finished_kept < 0:
            raise ValueError("finished_kept must be >= 0")


@dataclass(frozen=True, slots=True)
class TransferCompleted:
    """Transfer ``transfer_id`` of ``object_id`` finished: every byte verified
    and stored; ``statistics`` are its final ones."""

    transfer_id: int
    object_id: bytes
    statistics: ReceiverStatistics


@dataclass(frozen=True, slots=True)
class TransferFailed:
    """Transfer ``transfer_id`` gave up (``error`` says why); ``statistics``
    are its final ones."""

    transfer_id: int
    object_id: bytes
    error: DofError
    statistics: ReceiverStatistics


TransferEvent = TransferCompleted | TransferFailed


@dataclass(frozen=True, slots=True)
class TransferStatistics:
    """Counters of the whole core (requestor side summed over its transfers)."""

    retransmissions: int
    timeouts: int
    verification_failures: int
    duplicates: int
    blocks_received: int
    unsolicited: int
    slow_providers: int
    relay_retries: int
    blocks_sent: int
    bytes_sent: int
    units_dropped: int
    fetches_received: int
    refusals_sent: int
    bad_messages: int
    unmatched_messages: int
    active_senders: int
    open_senders: int
    active_transfers: int
    cache: CacheStatistics
    retries_sent: int = 0
    """Retries (address tokens) sent to plaintext requestors not yet validated."""
    unvalidated_fetches: int = 0
    """Plaintext Fetches without a valid address token (none of them served)."""
    retries_received: int = 0


@dataclass(slots=True)
class ServedStatistics:
    """What this core served one requestor (peer): Blocks, bytes, and how many
    of those Blocks came from the block cache."""

    blocks: int = 0
    bytes: int = 0
    cache_hits: int = 0
