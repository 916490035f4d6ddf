"""Interop check of secure sessions against Wireshark's DOF dissector.

A domain with an Authenticator (TRP), a provider and a client on loopback: the
client opens a secure session (TEP Rekey with cookie, Accept, Confirm), then
uses OAP Get, Set, Invoke and Subscribe/Register with events over AES-256-CCM.
The capture of the client's conversation (TEP and CCM) must decode with no
malformed packet and no warning, and decrypt completely:

1. with the session keys from the node's key log
   (``uat:custom_dof_seckey_list``), and
2. with the client's identity secret (``uat:custom_dof_identsecret_list``),
   which proves the tickets and confirmations are built as the dissector
   verifies them.

A second capture, at the Authenticator, holds the TRP exchange and must decode
cleanly too. (They are kept apart because the dissector assigns initiator and
responder roles per transport address: a capture in which the responder's port
also talks TRP to the Authenticator defeats its decryption of the initiator's
packets; docs/protocol.md, "Captures in Wireshark", and
:mod:`interop.capture_check`, which decodes one conversation at a time.)

``python -m interop.secure_check [--pcap PATH]``; exit status 0 only when both
decryptions leave no packet encrypted and tshark reports no problem.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import trio

from dofpy.oap.core import OapConfig
from dofpy.security.identity import Domain
from dofpy.security.keylog import parse_keylog, tshark_key_options
from dofpy.testing import LocalDomain, grant
from dofpy.trio import open_node, open_udp_endpoint
from dofpy.wire.oid import OID
from dofpy_services.authenticator.daemon import AuthenticatorCore
from interop.tshark_check import (
    SENSOR,
    SENSOR_OID,
    Sensor,
    TsharkReport,
    _provider_port,
    run_tshark,
)

DOMAIN = OID(6, b"interop.example")
PROVIDER_ID = OID(3, b"sensor-host@interop.example")
CLIENT_ID = OID(3, b"console@interop.example")


async def secure_exchange(
    pcap: Path, keylog: Path, trp_pcap: Path | None = None
) -> tuple[list[str], Domain]:
    """Run the secure exchange; what it did, and the domain (for its secrets)."""
    local = LocalDomain(DOMAIN)
    local.enrol(PROVIDER_ID, grant("p", interface=SENSOR.iid))
    local.enrol(CLIENT_ID, grant("rwxs", interface=SENSOR.iid))
    done: list[str] = []

    # TRP in the clear, chosen explicitly on both sides: the check is that
    # Wireshark decodes the TRP exchange itself (sealed, it is CCM like any
    # other session).
    authenticator_core = AuthenticatorCore(local.authenticator, sealed_only=False)
    async with open_udp_endpoint(authenticator_core, pcap_path=trp_pcap) as authenticator:
        authenticator_address = authenticator.local_address
        provider_config = OapConfig(
            node=local.node_config(
                PROVIDER_ID, authenticator=authenticator_address, seal_authenticator=False
            )
        )
        client_config = OapConfig(
            node=local.node_config(CLIENT_ID, authenticator=authenticator_address)
        )
        async with (
            open_node(config=provider_config, keylog_path=keylog) as provider,
            open_node(config=client_config, pcap_path=pcap) as client,
        ):
            provider.provide(SENSOR_OID, SENSOR, Sensor())
            peer = provider.local_address
            with trio.fail_after(30):
                identity = await client.secure_session(peer)
                assert identity == PROVIDER_ID
                done.append("TRP request session + TEP rekey/cookie/accept/confirm")
                assert await client.get(peer, SENSOR_OID, SENSOR, "reading") == 17
                await client.set(peer, SENSOR_OID, SENSOR, "label", "secure")
                assert await client.invoke(peer, SENSOR_OID, SENSOR, "scale", 2) == (34,)
                done.append("secure OAP get/set/invoke")
                async with (
                    client.subscribe(peer, SENSOR_OID, SENSOR, "reading") as readings,
                    client.subscribe(peer, SENSOR_OID, SENSOR, "alarm") as alarms,
                ):
                    provider.notify_change(SENSOR_OID, SENSOR, "reading", 18)
                    assert (await readings.receive()).values == (18,)
                    provider.signal(SENSOR_OID, SENSOR, "alarm", "secure alarm")
                    assert (await alarms.receive()).values == ("secure alarm",)
                done.append("secure OAP subscribe/register with change and signal events")
    return done, local.domain


def encrypted_left(report: TsharkReport) -> list[str]:
    return [info for info in report.infos if "Encrypted" in info]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pcap", type=Path, help="where to write the capture (default: temp)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        pcap = args.pcap or Path(tmp) / "secure.pcap"
        keylog = Path(tmp) / "keys.log"
        trp_pcap = Path(tmp) / "trp.pcap"
        done, domain = trio.run(secure_exchange, pcap, keylog, trp_pcap)
        port = _provider_port(pcap)
        trp = run_tshark(trp_pcap, _provider_port(trp_pcap))
        keys = parse_keylog(keylog.read_text().splitlines())
        by_keys = run_tshark(pcap, port, tshark_key_options(keys))
        secret = domain.credential_for(CLIENT_ID)
        by_secret = run_tshark(
            pcap, port, ["-o", f"uat:custom_dof_identsecret_list:{secret.wireshark_uat()}"]
        )
        print(f"exchange: {'; '.join(done)}")
        print(f"capture: {pcap} ({by_keys.packets} packets), {len(keys)} session key(s) logged")
        kinds = Counter(info.split(" [")[0].strip() for info in by_keys.infos)
        print("decrypted with the key log, Info column by kind:")
        for info, count in sorted(kinds.items()):
            print(f"  {count:3}  {info}")
        print(
            f"TRP capture at the Authenticator: {trp.packets} packets "
            f"({', '.join(sorted(set(trp.infos)))}), {len(trp.problems)} problems"
        )
        failed = bool(trp.problems) or trp.packets == 0
        for name, report in (("key log", by_keys), ("identity secret", by_secret)):
            left = encrypted_left(report)
            print(
                f"with the {name}: {len(report.problems)} malformed packets or warnings, "
                f"{len(left)} packets still encrypted"
            )
            for line in report.problems + left:
                print(f"  PROBLEM {line}")
            failed = failed or bool(report.problems or left)
        return 1 if failed or by_keys.packets == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
