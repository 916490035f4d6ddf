"""The main demo: secure block transfer to many requestors through a caching relay.

On 127.0.0.1 (UDP), all in one process:

* an **Authenticator** (the domain's Authentication Server, TRP) that every
  secure session is authorised by; the provider and the relay ask it inside a
  secure session of their own with it (TRP sealed: it refuses TRP in the clear);
* a **provider** that publishes a random object (seeded) and serves its blocks;
* a **caching relay**, a requestor upstream and a provider downstream, that
  fetches each block from the provider once however many requestors ask;
* ``--requestors`` **requestors** (default 20), each its own node with its own
  identity, that reach the relay through a **seeded lossy link** (``--loss``,
  default 2% of datagrams dropped in each direction) and fetch the object.

Every session is a TEP handshake authorised by the Authenticator, every block
travels sealed (AES-256-CCM) and every leaf is checked against the manifest's
Merkle tree before it is stored; at the end each requestor's copy is compared
with the object's SHA-256. A live progress line (updated in place on a
terminal, a line every few seconds otherwise) and a closing table per
requestor follow. ``--pcap FILE`` captures the traffic of every party (each
datagram once, as it is sent: those the lossy link then drops included) and
``--keylog FILE`` appends every party's session keys (mode 0600), so that
Wireshark decodes and decrypts the whole run (docs/operations.md;
``python -m interop.capture_check FILE --keylog KEYS`` checks it).

Run it with ``make demo-transfer`` (``make demo`` is the fleet demo) or
``python -m dofpy_services.demo [--requestors N] [--size-mib M] [--loss P]
[--seed S] [--pcap FILE] [--keylog FILE]``.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import sys
from collections.abc import Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TextIO

import trio

from dofpy._core import Address
from dofpy.oap.core import OapConfig
from dofpy.security.authenticator import (
    Decision,
)
from dofpy.testing import LocalDomain, grant
from dofpy.transfer.core import TransferConfig
from dofpy.transfer.manifest import Manifest
from dofpy.transfer.messages import TRANSFER_IID
from dofpy.transfer.receiver import ReceiverConfig, ReceiverStatistics
from dofpy.transfer.store import MemoryStore
from dofpy.trio import PcapWriter, TransferNode, open_transfer_node, open_udp_endpoint
from dofpy.wire.oid import OID
from dofpy_services.authenticator.daemon import AuthenticatorCore
from dofpy_services.lossy_link import LossyLink

DOMAIN = OID(6, b"demo.example")
PROVIDER_ID = OID(3, b"image-provider@demo.example")
RELAY_ID = OID(3, b"relay@demo.example")
AUTHENTICATOR_ID = OID(3, b"authenticator@demo.example")
BLOCK_SIZE = 8192
"""Loopback is a LAN: 8 KiB blocks (the transfer's LAN size; 1 KiB is its
default for links of unknown MTU)."""
MIB = 1 << 20
CLEAR_TO_END = "\x1b[K"
"""ANSI: erase the rest of the line (a shorter progress line leaves no residue)."""


def requestor_id(index: int) -> OID:
    return OID(3, f"device-{index:02}@demo.example".encode())


# -- the domain -----------------------------------------------------------------------------


class DemoDomain:
    """The domain's credentials, and a node configuration per identity. Secrets
    and keys come from one generator seeded by ``--seed`` (a demo; a daemon
    uses ``secrets.token_bytes``)."""

    def __init__(self, seed: int, requestors: int) -> None:
        self.local = LocalDomain(DOMAIN, rng=random.Random(f"{seed}:keys").randbytes)
        for identity in [PROVIDER_ID, RELAY_ID] + [requestor_id(i) for i in range(requestors)]:
            self.local.enrol(identity, grant("rxp", interface=TRANSFER_IID))
        self.local.enrol(AUTHENTICATOR_ID)
        self.authenticator = self.local.authenticator

    def config(self, identity: OID, authenticator: Address) -> TransferConfig:
        # Responders (provider, relay) ask the Authenticator inside a secure
        # session with it (TRP sealed, the default), so it knows who asks.
        node = self.local.node_config(identity, authenticator=authenticator)
        return TransferConfig(
            oap=OapConfig(node=node),
            receiver=ReceiverConfig(block_size=BLOCK_SIZE),
        )


# -- requestors and the display -------------------------------------------------------------


@dataclass
class Row:
    """One requestor's outcome."""

    identity: OID
    bytes_verified: int = 0
    seconds: float = 0.0
    retransmissions: int = 0
    timeouts: int = 0
    verification_failures: int = 0
    blocks: int = 0
    relay_blocks: int = 0  # Blocks the relay served this requestor...
    relay_cache_hits: int = 0  # ...of which from its block cache
    intact: bool = False
    error: str | None = None
    done: bool = False
    started: float = 0.0


@dataclass
class Progress:
    rows: list[Row]
    size: int
    relay: TransferNode
    object_id: bytes
    started: float = 0.0

    def _relay_line(self) -> str:
        upstream = self.relay.core.relay_transfer(self.object_id)
        if upstream is None:
            return "relay idle"
        stats = self.relay.core.transfer_statistics(upstream, 0.0)
        return f"relay has {100 * stats.bytes_verified / self.size:5.1f}%"

    def line(self, now: float) -> str:
        fetched = sum(row.bytes_verified for row in self.rows)
        total = self.size * len(self.rows)
        done = sum(row.done for row in self.rows)
        elapsed = max(now - self.started, 1e-9)
        retransmissions = sum(row.retransmissions for row in self.rows)
        return (
            f"  {fetched / MIB:7.1f}/{total / MIB:.1f} MiB verified ({100 * fetched / total:5.1f}%)"
            f"  {done:2}/{len(self.rows)} done  {fetched / elapsed / 1e6:6.1f} MB/s"
            f"  {retransmissions} retransmitted  {self._relay_line()}  {elapsed:5.1f} s"
        )


async def display(progress: Progress, out: TextIO, tty: bool) -> None:
    """Print the progress line: in place on a terminal, every few seconds otherwise."""
    interval = 0.25 if tty else 3.0
    while True:
        await trio.sleep(interval)
        line = progress.line(trio.current_time())
        if tty:
            out.write("\r" + line + CLEAR_TO_END)
        else:
            out.write(line + "\n")
        out.flush()


async def fetch_one(
    node: TransferNode, row: Row, manifest: Manifest, relay: Address, store: MemoryStore
) -> None:
    def update(stats: ReceiverStatistics) -> None:
        row.bytes_verified = stats.bytes_verified
        row.retransmissions = stats.retransmissions
        row.timeouts = stats.timeouts
        row.verification_failures = stats.verification_failures
        row.blocks = stats.blocks_received

    row.started = trio.current_time()
    try:
        await node.fetch(manifest, [relay], store=store, progress=update, progress_interval=0.2)
    except Exception as exc:  # a failed fetch is a row of the table, not a crash
        row.error = f"{type(exc).__name__}: {exc}"
    else:
        row.intact = hashlib.sha256(store.data(manifest.object_id)).digest() == manifest.object_id
    row.seconds = trio.current_time() - row.started
    row.done = True


def print_table(rows: Sequence[Row], out: TextIO) -> None:
    out.write(
        f"  {'requestor':26} {'MiB':>6} {'seconds':>8} {'MB/s':>7} {'retransm.':>9} "
        f"{'timeouts':>8} {'verif.fail':>10} {'cache hits':>11} {'verified':>8}\n"
    )
    for row in rows:
        rate = row.bytes_verified / row.seconds / 1e6 if row.seconds else 0.0
        verdict = "yes" if row.intact else "NO"
        hits = (
            f"{100 * row.relay_cache_hits / row.relay_blocks:10.1f}%" if row.relay_blocks else "-"
        )
        out.write(
            f"  {row.identity!s:26} {row.bytes_verified / MIB:6.1f} {row.seconds:8.2f} "
            f"{rate:7.1f} {row.retransmissions:9} {row.timeouts:8} "
            f"{row.verification_failures:10} {hits:>11} {verdict:>8}\n"
        )
        if row.error is not None:
            out.write(f"    failed: {row.error}\n")


# -- the demo -------------------------------------------------------------------------------


async def run_demo(
    requestors: int = 20,
    size_mib: float = 16,
    loss: float = 0.02,
    seed: int = 1,
    pcap: Path | None = None,
    out: TextIO | None = None,
    keylog: Path | None = None,
    parties: dict[Address, str] | None = None,
) -> int:
    """Run the demo; 0 when every requestor got a verified, byte-identical copy.

    ``pcap``: one capture of every party's datagrams; ``keylog``: every
    party's session keys (see :mod:`dofpy.security.keylog`); ``parties`` is
    filled with each party's address and name (to read a capture by)."""
    parties = parties if parties is not None else {}
    out = out if out is not None else sys.stdout
    tty = out.isatty()
    size = int(size_mib * MIB)
    if size < 1:
        raise ValueError("the object must have at least one byte")
    out.write(
        f"dofpy demo: an Authenticator, a provider, a caching relay and {requestors} requestors "
        f"on 127.0.0.1;\n  a {size / MIB:g} MiB object, {BLOCK_SIZE // 1024} KiB blocks, "
        f"{100 * loss:g}% loss each way between requestors and relay, seed {seed}\n"
    )
    domain = DemoDomain(seed, requestors)
    data = random.Random(f"{seed}:object").randbytes(size)
    rows = [Row(requestor_id(i)) for i in range(requestors)]
    stores = [MemoryStore() for _ in range(requestors)]
    async with AsyncExitStack() as stack:
        capture = None if pcap is None else PcapWriter(pcap)
        if capture is not None:
            stack.callback(capture.close)  # after every party is closed (LIFO)
        grants = [0, 0]  # sessions granted, refused

        def count(decision: Decision, peer: Address, now: float) -> None:
            grants[0 if decision.granted else 1] += 1

        authenticator = await stack.enter_async_context(
            open_udp_endpoint(
                AuthenticatorCore(
                    domain.authenticator,
                    on_decision=count,
                    security=domain.local.security(AUTHENTICATOR_ID),
                ),
                shared_pcap=capture,
            )
        )
        authenticator_address = authenticator.local_address
        parties[authenticator_address] = "Authenticator"
        provider = await stack.enter_async_context(
            open_transfer_node(
                config=domain.config(PROVIDER_ID, authenticator_address),
                shared_pcap=capture,
                keylog_path=keylog,
            )
        )
        relay = await stack.enter_async_context(
            open_transfer_node(
                config=domain.config(RELAY_ID, authenticator_address),
                shared_pcap=capture,
                keylog_path=keylog,
            )
        )
        parties[provider.local_address] = "provider"
        parties[relay.local_address] = "relay"
        manifest = provider.publish(data)
        relay.relay(manifest, [provider.local_address])
        nursery = await stack.enter_async_context(trio.open_nursery())
        link = LossyLink(relay.local_address, loss, seed, nursery, capture)
        stack.callback(link.close)
        parties[link.address] = "lossy link"
        stack.callback(nursery.cancel_scope.cancel)
        nodes: list[TransferNode] = []
        for index in range(requestors):
            nodes.append(
                await stack.enter_async_context(
                    open_transfer_node(
                        config=domain.config(requestor_id(index), authenticator_address),
                        shared_pcap=capture,
                        keylog_path=keylog,
                    )
                )
            )
            parties[nodes[-1].local_address] = f"device-{index:02}"
        out.write(
            f"  object {manifest.object_id.hex()[:16]}..., {manifest.leaf_count} leaves of "
            f"{manifest.leaf_size} B, Merkle root {manifest.merkle_root.hex()[:16]}...\n"
        )
        progress = Progress(rows, size, relay, manifest.object_id, trio.current_time())
        nursery.start_soon(display, progress, out, tty)
        async with trio.open_nursery() as fetches:
            for node, row, store in zip(nodes, rows, stores, strict=True):
                fetches.start_soon(fetch_one, node, row, manifest, link.address, store)
        wall = trio.current_time() - progress.started
        final = progress.line(trio.current_time())
        out.write(("\r" + final + CLEAR_TO_END if tty else final) + "\n\n")
        for node, row in zip(nodes, rows, strict=True):
            seen_as = link.upstream_address(node.local_address)
            if seen_as is not None:
                parties[seen_as] = f"lossy link for {parties[node.local_address]}"
                served = relay.core.served(seen_as)
                row.relay_blocks, row.relay_cache_hits = served.blocks, served.cache_hits
        print_table(rows, out)
        relay_stats = relay.statistics()
        cache = relay_stats.transfer.cache
        upstream_id = relay.core.relay_transfer(manifest.object_id)
        upstream = None if upstream_id is None else relay.core.transfer_statistics(upstream_id, 0)
        total = sum(row.bytes_verified for row in rows)
        ok = sum(row.intact for row in rows)
        lookups = cache.hits + cache.misses
        out.write(
            f"\n  total: {ok}/{requestors} requestors verified, {total / MIB:.1f} MiB in "
            f"{wall:.2f} s ({total / wall / 1e6:.1f} MB/s), "
            f"{sum(row.retransmissions for row in rows)} blocks retransmitted, "
            f"{sum(row.verification_failures for row in rows)} verification failures\n"
        )
        out.write(
            f"  relay: cache {cache.hits} hits / {cache.misses} misses "
            f"({100 * cache.hits / max(lookups, 1):.1f}% hits), "
            f"{relay_stats.transfer.blocks_sent} blocks served downstream, "
            f"{0 if upstream is None else upstream.blocks_received} blocks fetched upstream "
            f"({0 if upstream is None else upstream.retransmissions} retransmitted); "
            f"{relay_stats.oap.node.bad_datagrams} bad datagrams\n"
        )
        dropped = link.to_upstream.dropped + link.to_requestors.dropped
        carried = dropped + link.to_upstream.forwarded + link.to_requestors.forwarded
        authenticated = sum(
            node.node.core.node.peer_identity(link.address) == RELAY_ID for node in nodes
        )
        out.write(
            f"  lossy link: {dropped} of {carried} datagrams dropped\n"
            f"  Authenticator: {grants[0]} sessions granted, {grants[1]} refused; "
            f"{authenticated}/{requestors} requestors hold a secure session with {RELAY_ID}\n"
        )
        if capture is not None:
            capture.flush()
            out.write(
                f"  capture of every party: {pcap} ({capture.records_written} datagrams"
                + (f"; session keys in {keylog}" if keylog is not None else "")
                + "; decode each UDP conversation on its own, see docs/operations.md)\n"
            )
        out.flush()
    return 0 if ok == requestors else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requestors", type=int, default=20, help="requestors (default 20)")
    parser.add_argument("--size-mib", type=float, default=16, help="object size (default 16)")
    parser.add_argument("--loss", type=float, default=0.02, help="loss share (default 0.02)")
    parser.add_argument("--seed", type=int, default=1, help="seed of keys, data, loss")
    parser.add_argument("--pcap", type=Path, help="capture every party's datagrams to this file")
    parser.add_argument(
        "--keylog", type=Path, help="append every session key here (0600; for Wireshark)"
    )
    args = parser.parse_args(argv)
    if args.requestors < 1:
        parser.error("--requestors must be at least 1")
    if not args.size_mib > 0:
        parser.error("--size-mib must be positive")
    if not 0 <= args.loss < 1:
        parser.error("--loss must be in [0, 1)")
    for path in (args.pcap, args.keylog):
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
    return trio.run(
        partial(
            run_demo,
            args.requestors,
            args.size_mib,
            args.loss,
            args.seed,
            args.pcap,
            keylog=args.keylog,
        )
    )


if __name__ == "__main__":
    sys.exit(main())
