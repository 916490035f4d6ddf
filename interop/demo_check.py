"""Interop check of the main job: the demo's own traffic, every party, in tshark.

Runs the demo (``dofpy_services.demo``: an Authenticator, a provider, a caching
relay and requestors behind a lossy link, every session keyed by TEP and
authorised by the Authenticator, blocks sealed) with one capture of every
party (``--pcap``) and every party's key log (``--keylog``). Then, per UDP
conversation (:mod:`interop.capture_check`), tshark must decode every frame
as DOF, with no malformed packet and no warning, and leave none encrypted:

1. with the session keys of the key log (``uat:custom_dof_seckey_list``), and
2. with the identity secrets of the demo's domain
   (``uat:custom_dof_identsecret_list``): the dissector learns each key from
   the TEP handshake, which proves tickets and confirmations are built as it
   verifies them.

The capture is written by the endpoints themselves, one record per datagram,
so a frame holding several datagrams (a UDP GSO buffer) is a failure here.

``python -m interop.demo_check [--requestors N] [--size-mib M] [--pcap PATH]``;
exit status 0 only when every conversation decoded and decrypted completely.
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import trio

from dofpy.security.keylog import parse_keylog, tshark_key_options
from dofpy.testing.tshark import find_tshark
from dofpy_services.demo import (
    AUTHENTICATOR_ID,
    PROVIDER_ID,
    RELAY_ID,
    DemoDomain,
    requestor_id,
    run_demo,
)
from interop.capture_check import CaptureReport, check_capture, print_report

SEED = 1


def demo_secrets(seed: int, requestors: int) -> list[str]:
    """The ``custom_dof_identsecret_list`` lines of every identity of the demo's
    domain (the demo derives its secrets from its seed)."""
    domain = DemoDomain(seed, requestors).local.domain
    identities = [PROVIDER_ID, RELAY_ID, AUTHENTICATOR_ID]
    identities += [requestor_id(i) for i in range(requestors)]
    return [domain.credential_for(identity).wireshark_uat() for identity in identities]


def check_demo(
    pcap: Path, keylog: Path, workdir: Path, requestors: int, size_mib: float, loss: float
) -> tuple[int, str, list[CaptureReport]]:
    """Run the demo capturing to ``pcap`` and ``keylog``; its status, its output
    and tshark's reports (key log, identity secrets)."""
    tshark = find_tshark()
    if tshark is None:
        raise SystemExit(
            "tshark not found: apt-get update && "
            "DEBIAN_FRONTEND=noninteractive apt-get install -y tshark"
        )
    out = io.StringIO()
    parties: dict[tuple[str, int], str] = {}
    status = trio.run(
        lambda: run_demo(
            requestors, size_mib, loss, SEED, pcap, out=out, keylog=keylog, parties=parties
        )
    )
    keys = parse_keylog(keylog.read_text().splitlines())
    secrets = demo_secrets(SEED, requestors)
    secret_options = [
        w for line in secrets for w in ("-o", f"uat:custom_dof_identsecret_list:{line}")
    ]
    reports = [
        check_capture(
            pcap,
            tshark_key_options(keys),
            f"the key log ({len(keys)} session keys)",
            tshark=tshark,
            workdir=workdir,
            names=parties,
        ),
        check_capture(
            pcap,
            secret_options,
            f"the domain's {len(secrets)} identity secrets",
            tshark=tshark,
            workdir=workdir,
            names=parties,
        ),
    ]
    return status, out.getvalue(), reports


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requestors", type=int, default=3, help="requestors (default 3)")
    parser.add_argument("--size-mib", type=float, default=1, help="object size (default 1)")
    parser.add_argument("--loss", type=float, default=0.02, help="loss share (default 0.02)")
    parser.add_argument("--pcap", type=Path, help="keep the capture here (default: temporary)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        pcap = args.pcap or Path(tmp) / "demo.pcap"
        keylog = (args.pcap.with_name(args.pcap.name + ".keys")) if args.pcap else Path(tmp) / "k"
        status, output, reports = check_demo(
            pcap, keylog, Path(tmp), args.requestors, args.size_mib, args.loss
        )
        total = sum(c.frames for c in reports[0].conversations)
        print(
            f"demo: exit status {status}, {args.requestors} requestors, "
            f"{args.size_mib:g} MiB; capture {pcap}: {total} datagrams in "
            f"{len(reports[0].conversations)} UDP conversations"
        )
        if status != 0:
            print(output)
        failed = status != 0
        for report in reports:
            print_report(report)
            failed = failed or bool(report.problems) or not report.conversations
        for line in reports[0].split_frames:
            print(f"  PROBLEM {line} (the endpoints record one datagram per record)")
        failed = failed or bool(reports[0].split_frames) or reports[0].other_records > 0
        print("every datagram decoded as DOF and decrypted" if not failed else "FAILED")
        return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
