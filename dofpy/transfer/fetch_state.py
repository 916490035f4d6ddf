"""The state of one fetch (:class:`~dofpy.transfer.receiver.Receiver`): its
state table, its configuration and its statistics.

HASHES until every hash chunk is verified (leaves of verified chunks are
fetched meanwhile), then BLOCKS until every leaf is; either may give up
(FAILED). COMPLETE and FAILED are final: any input there, as any other pair
missing from the table, raises :class:`~dofpy.errors.LocalProtocolError`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from dofpy._core import Address
from dofpy.transfer.congestion import CongestionConfig
from dofpy.transfer.messages import DEFAULT_BLOCK_SIZE
from dofpy.transfer.rtt import RttConfig

__all__ = ["FetchState", "ReceiverConfig", "ReceiverStatistics", "SourceStatistics"]


class FetchState(enum.Enum):
    """Where a transfer is. HASHES: some hash chunks are still missing (leaves of
    verified chunks are fetched meanwhile); BLOCKS: all hashes verified."""

    HASHES = "hashes"
    BLOCKS = "blocks"
    COMPLETE = "complete"
    FAILED = "failed"


class FetchInput(enum.Enum):
    HASHES_DONE = "hashes done"
    LEAVES_DONE = "leaves done"
    GIVE_UP = "give up"


FETCH_TRANSITIONS: dict[tuple[FetchState, FetchInput], FetchState] = {
    (FetchState.HASHES, FetchInput.HASHES_DONE): FetchState.BLOCKS,
    (FetchState.HASHES, FetchInput.GIVE_UP): FetchState.FAILED,
    (FetchState.BLOCKS, FetchInput.LEAVES_DONE): FetchState.COMPLETE,
    (FetchState.BLOCKS, FetchInput.GIVE_UP): FetchState.FAILED,
}


@dataclass(frozen=True, slots=True)
class ReceiverConfig:
    """Parameters of a requestor. ``block_size``: bytes of data per Block
    datagram (rounded down to a multiple of the leaf size). ``min_rate``: the
    progress floor, verified bytes/s from the provider asked, measured over
    each ``rate_window`` seconds; a provider below it is replaced (None: no
    floor)."""

    block_size: int = DEFAULT_BLOCK_SIZE
    congestion: CongestionConfig = field(default_factory=CongestionConfig)
    rtt: RttConfig = field(default_factory=RttConfig)
    max_timeouts: int = 6
    max_bad_blocks: int = 64
    min_rate: float | None = 1024.0
    rate_window: float = 30.0

    def __post_init__(self) -> None:
        if self.block_size < 1:
            raise ValueError("block_size must be > 0")
        if self.max_timeouts < 1 or self.max_bad_blocks < 1:
            raise ValueError("max_timeouts and max_bad_blocks must be >= 1")
        if self.min_rate is not None and not self.min_rate > 0:
            raise ValueError("min_rate must be > 0 (or None)")
        if not self.rate_window > 0:
            raise ValueError("rate_window must be > 0")


@dataclass(frozen=True, slots=True)
class ReceiverStatistics:
    """Counters of one transfer (``rate``: verified bytes/s since the start)."""

    state: FetchState
    bytes_verified: int
    blocks_received: int
    duplicates: int
    unrequested: int
    retransmissions: int
    timeouts: int
    verification_failures: int
    fetches_sent: int
    unsolicited: int
    slow_providers: int
    window: int
    srtt: float | None
    min_rtt: float | None
    rto: float
    rate: float
    provider: Address


@dataclass(slots=True)
class SourceStatistics:
    """What one source sent a transfer that was not taken: ``unsolicited``
    messages (not from the provider asked, or not through its session) and
    ``bad_blocks`` (from the provider asked, failing verification)."""

    unsolicited: int = 0
    bad_blocks: int = 0


@dataclass(slots=True)
class Outstanding:
    """A block asked for and not yet arrived: its request ordinal, the Fetch
    that asked for it, and where it ends."""

    ordinal: int
    fetch_seq: int
    end: int  # leaf pieces: the end leaf; hash chunks: chunk + 1
