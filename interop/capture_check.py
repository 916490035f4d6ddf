"""Decode and decrypt a capture of DOF traffic with Wireshark's DOF dissector,
one UDP conversation at a time, and say what did not.

Why one conversation at a time: the dissector keeps its UDP session state per
transport address, with the destination of the first packet it sees as the
"server" (the TEP responder). A port that talks to several peers (a relay:
responder to its requestors, initiator towards the provider and the
Authenticator) gets its roles mixed in a capture of all of them; each
conversation decoded on its own has one initiator and one responder, as the
dissector assumes.

Why frames are split: a capture taken on loopback, or on an interface that
offloads UDP segmentation, holds a UDP GSO send (dofpy's endpoints send runs
of equal-size datagrams so) or a GRO-coalesced receive as one packet. The
dissector reads one DNP packet per UDP datagram and so cannot decrypt it; the
check splits such a frame back into its datagrams
(:func:`~dofpy.pcap.split_coalesced_untrusted`) and names it.

For each conversation it runs tshark with the session keys of a key log
(``uat:custom_dof_seckey_list``) and/or identity secrets
(``uat:custom_dof_identsecret_list``: the dissector then learns each session
key from the TEP handshake itself) and fails on any frame that is not DOF, is
malformed or warned, or is left encrypted.

``python -m interop.capture_check CAPTURE [--keylog FILE] [--identsecret LINE]...
[--split-to FILE]`` (``LINE`` as ``KeyCredential.wireshark_uat()`` writes it);
``--split-to`` writes the capture with every GSO/GRO buffer split into its
datagrams, for Wireshark. Exit status 0 only when every conversation decoded
and decrypted completely.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from dofpy.pcap import (
    PCAP_GLOBAL_HEADER,
    Capture,
    pcap_record,
    read_pcap_untrusted,
    split_coalesced_untrusted,
)
from dofpy.security.keylog import parse_keylog, tshark_key_options
from dofpy.testing.tshark import find_tshark
from dofpy.testing.tshark import run_tshark as oracle

__all__ = [
    "CaptureReport",
    "ConversationReport",
    "Endpoint",
    "check_capture",
    "conversations",
    "main",
]

Endpoint = tuple[str, int]
_WARNING_INFO = ("Encrypted", "decryption failure", "No Session")


@dataclass
class ConversationReport:
    """What tshark made of one UDP conversation, under one set of keys."""

    endpoints: tuple[Endpoint, Endpoint]
    frames: int = 0
    names: Mapping[Endpoint, str] = field(default_factory=dict)
    """Who is at an endpoint, where known (shown beside its address)."""
    kinds: Counter[str] = field(default_factory=Counter)
    """Frames by the application part of their Info column (TEP, TRP, OAP...)."""
    problems: list[str] = field(default_factory=list)
    """One line per frame that is not DOF, is malformed or warned, or stayed
    encrypted (the frame numbers are the capture's: ``7.2`` is the second
    datagram of its frame 7)."""

    @property
    def name(self) -> str:
        shown = []
        for endpoint in self.endpoints:
            address = f"{endpoint[0]}:{endpoint[1]}"
            who = self.names.get(endpoint)
            shown.append(address if who is None else f"{who} ({address})")
        return " <-> ".join(shown)


@dataclass
class CaptureReport:
    """Every conversation of a capture under one set of keys."""

    keys: str
    conversations: list[ConversationReport]
    split_frames: list[str]
    """Frames that held several datagrams (GSO/GRO), each naming its count."""
    other_records: int

    @property
    def problems(self) -> list[str]:
        return [f"{c.name}: {line}" for c in self.conversations for line in c.problems]


@dataclass
class _Conversation:
    endpoints: tuple[Endpoint, Endpoint]
    records: list[bytes] = field(default_factory=list)
    origin: list[str] = field(default_factory=list)
    """Per record: the capture's frame it came from (``7`` or ``7.2`` for part 2 of frame 7)."""


def conversations(capture: Capture) -> tuple[list[_Conversation], list[str]]:
    """The capture's UDP conversations (by their two endpoints), in order of
    first packet, with coalesced frames split into their datagrams; and the
    list of split frames."""
    by_pair: dict[tuple[Endpoint, Endpoint], _Conversation] = {}
    split: list[str] = []
    for datagram in capture.datagrams:
        pair = (min(datagram.src, datagram.dst), max(datagram.src, datagram.dst))
        conversation = by_pair.setdefault(pair, _Conversation(pair))
        parts = split_coalesced_untrusted(datagram.payload)
        if parts is None:
            parts_named = [(str(datagram.frame), datagram.payload)]
        else:
            split.append(
                f"frame {datagram.frame} ({datagram.src[0]}:{datagram.src[1]} -> "
                f"{datagram.dst[0]}:{datagram.dst[1]}, {len(datagram.payload)} bytes) "
                f"holds {len(parts)} datagrams of {len(parts[0])} bytes: a UDP GSO/GRO "
                "buffer captured unsegmented"
            )
            parts_named = [(f"{datagram.frame}.{i + 1}", p) for i, p in enumerate(parts)]
        for index, (origin, payload) in enumerate(parts_named):
            # A microsecond apart keeps the parts in order in every tool.
            stamp = datagram.timestamp + index * 1e-6
            conversation.records.append(pcap_record(stamp, datagram.src, datagram.dst, payload))
            conversation.origin.append(origin)
    return list(by_pair.values()), split


def write_split(capture: Capture, path: Path) -> int:
    """Write ``capture``'s UDP datagrams to ``path`` (raw IP pcap), every
    GSO/GRO buffer split into its datagrams; how many were written."""
    records = []
    for datagram in capture.datagrams:
        parts = split_coalesced_untrusted(datagram.payload) or [datagram.payload]
        records += [
            pcap_record(datagram.timestamp + i * 1e-6, datagram.src, datagram.dst, part)
            for i, part in enumerate(parts)
        ]
    path.write_bytes(PCAP_GLOBAL_HEADER + b"".join(records))
    return len(records)


def check_capture(
    pcap: Path,
    key_options: Sequence[str],
    keys: str,
    *,
    tshark: str,
    workdir: Path,
    names: Mapping[Endpoint, str] | None = None,
) -> CaptureReport:
    """Decode every conversation of ``pcap`` with tshark and ``key_options``;
    ``names`` says who is at which endpoint, for the report."""
    capture = read_pcap_untrusted(pcap.read_bytes())
    found, split = conversations(capture)
    reports = []
    for index, conversation in enumerate(found):
        path = workdir / f"conversation-{index}.pcap"
        path.write_bytes(PCAP_GLOBAL_HEADER + b"".join(conversation.records))
        (_, a_port), (_, b_port) = conversation.endpoints
        result = oracle(
            path,
            a_port,
            ["-d", f"udp.port=={b_port},dof", *key_options],
            tshark=tshark,
            verbose=False,
        )
        report = ConversationReport(
            conversation.endpoints, frames=result.packets, names=names or {}
        )
        reasons: dict[int, list[str]] = {}
        for number, (stack, info) in enumerate(zip(result.protocols, result.info, strict=True)):
            if "dof" not in stack.split(":"):
                reasons.setdefault(number, []).append(f"not decoded as DOF ({stack})")
            elif any(word in info for word in _WARNING_INFO):
                reasons.setdefault(number, []).append(f"not decrypted: {info.strip()}")
            report.kinds[_kind(info)] += 1
        for line in result.problems:
            number_text, _, rest = line.partition("\t")
            number = int(number_text) - 1 if number_text.isdigit() else -1
            reasons.setdefault(number, []).append(f"malformed or warned: {rest.strip()}")
        for number, why in sorted(reasons.items()):
            origin = conversation.origin[number] if 0 <= number < len(conversation.origin) else "?"
            report.problems.append(f"frame {origin}: {'; '.join(why)}")
        reports.append(report)
    return CaptureReport(keys, reports, split, capture.other_records)


def _kind(info: str) -> str:
    """``TEP Rekey`` / ``OAP Invoke Response`` ... from an Info column (tshark
    appends the operation's details in brackets)."""
    return " ".join(info.split(" [", maxsplit=1)[0].split()) or "?"


def print_report(report: CaptureReport) -> None:
    """Counts per conversation, and every problem."""
    print(f"with {report.keys}:")
    for conversation in report.conversations:
        left = len(conversation.problems)
        kinds = ", ".join(f"{n} {k}" for k, n in sorted(conversation.kinds.items()))
        print(
            f"  {conversation.name}: {conversation.frames} frames, "
            f"{conversation.frames - left} clean, {left} problems ({kinds})"
        )
        for line in conversation.problems:
            print(f"    PROBLEM {line}")
    frames = sum(c.frames for c in report.conversations)
    bad = len(report.problems)
    print(
        f"  total: {frames} frames in {len(report.conversations)} conversations, "
        f"{frames - bad} decoded as DOF and decrypted, {bad} with problems"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("capture", type=Path, help="a pcap file (tcpdump -w, or dofpy's --pcap)")
    parser.add_argument("--keylog", type=Path, help="a dofpy key log (--keylog of a node)")
    parser.add_argument(
        "--identsecret",
        action="append",
        default=[],
        metavar="LINE",
        help='"<domain hex>","<identity hex>","<secret hex>" (repeat for each identity)',
    )
    parser.add_argument(
        "--split-to", type=Path, metavar="FILE", help="write the capture, GSO buffers split, here"
    )
    args = parser.parse_args(argv)
    if args.split_to is not None:
        written = write_split(read_pcap_untrusted(args.capture.read_bytes()), args.split_to)
        print(f"{args.split_to}: {written} datagrams")
    tshark = find_tshark()
    if tshark is None:
        print("tshark not found: apt-get install tshark", file=sys.stderr)
        return 2
    key_sets: list[tuple[str, list[str]]] = []
    if args.keylog is not None:
        keys = parse_keylog(args.keylog.read_text().splitlines())
        key_sets.append((f"the key log ({len(keys)} session keys)", tshark_key_options(keys)))
    if args.identsecret:
        options = [
            word
            for line in args.identsecret
            for word in ("-o", f"uat:custom_dof_identsecret_list:{line}")
        ]
        key_sets.append((f"{len(args.identsecret)} identity secrets", options))
    if not key_sets:
        key_sets.append(("no keys (secure frames will stay encrypted)", []))
    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        for name, options in key_sets:
            report = check_capture(args.capture, options, name, tshark=tshark, workdir=Path(tmp))
            print_report(report)
            failed = failed or bool(report.problems) or not report.conversations
        for line in report.split_frames:
            print(f"split: {line}")
        if report.other_records:
            print(f"{report.other_records} records are not UDP over IP (ignored)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
