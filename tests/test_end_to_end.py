"""The demo and the tshark interop exchange, end to end over loopback."""

from __future__ import annotations

import io
from collections import Counter
from pathlib import Path

import pytest

from dofpy.pcap import read_pcap_untrusted
from dofpy.security.keylog import parse_keylog
from dofpy.testing.tshark import require_tshark
from dofpy_services.demo import main, run_demo
from interop.tshark_check import _provider_port, exchange, run_tshark


async def test_demo_delivers_verified_copies_through_the_relay_over_a_lossy_link(
    tmp_path: Path,
) -> None:
    out = io.StringIO()
    pcap, keylog = tmp_path / "demo.pcap", tmp_path / "demo.keys"
    status = await run_demo(
        requestors=3, size_mib=0.5, loss=0.05, seed=3, pcap=pcap, out=out, keylog=keylog
    )
    text = out.getvalue()
    assert status == 0, text
    assert "3/3 requestors verified" in text
    assert "0 verification failures" in text
    assert text.count(" yes\n") == 3  # the "verified" column of every requestor
    relay_line = next(line for line in text.splitlines() if line.startswith("  relay: cache"))
    hits = int(relay_line.split("cache ")[1].split(" hits")[0])
    assert hits > 0  # blocks asked by several requestors came from the relay's cache
    # ... and the table shows, per requestor, the share the relay served from its cache.
    rows = [line for line in text.splitlines() if line.endswith(" yes")]
    shares = [float(line.split()[-2].rstrip("%")) for line in rows]
    assert len(shares) == 3 and all(0 <= share <= 100 for share in shares)
    assert sum(shares) > 0
    assert "Authenticator: 4 sessions granted, 0 refused" in text
    assert "3/3 requestors hold a secure session with [{03}:relay@demo.example]" in text
    link_line = next(line for line in text.splitlines() if line.startswith("  lossy link:"))
    assert not link_line.startswith("  lossy link: 0 of")  # 5% loss did drop datagrams
    # One capture of every party: each requestor with the link, the link with
    # the relay for each requestor, the relay with the provider, the provider
    # and the relay with the Authenticator.
    datagrams = read_pcap_untrusted(pcap.read_bytes()).datagrams
    conversations = {frozenset((d.src, d.dst)) for d in datagrams}
    assert len(conversations) == 3 + 3 + 1 + 2
    assert f"capture of every party: {pcap} ({len(datagrams)} datagrams" in text
    # Every party logs its session keys: 4 sessions granted, 2 with the
    # Authenticator, each logged by both ends (the Authenticator logs none).
    assert len(parse_keylog(keylog.read_text().splitlines())) == 6
    assert keylog.stat().st_mode & 0o777 == 0o600


def test_every_datagram_of_the_demo_decodes_and_decrypts_in_tshark(tmp_path: Path) -> None:
    """make interop's check, smaller: the demo's capture of every party, each
    conversation decoded by tshark with the key log and with the identity
    secrets: all DOF, nothing malformed or warned, nothing left encrypted."""
    require_tshark()
    from interop.demo_check import check_demo  # noqa: PLC0415

    status, output, reports = check_demo(
        tmp_path / "demo.pcap", tmp_path / "keys", tmp_path, 2, 0.25, 0.02
    )
    assert status == 0, output
    for report in reports:
        assert len(report.conversations) == 2 + 2 + 1 + 2
        assert report.problems == []
        assert report.split_frames == [] and report.other_records == 0
        # Every conversation is a session keyed by TEP (the lossy link may
        # repeat an Accept), followed by tshark.
        assert all(c.kinds["TEP Accept"] >= 1 for c in report.conversations)
        kinds = sum((c.kinds for c in report.conversations), Counter[str]())
        assert kinds["TRP Request Session Response"] >= 3  # sealed TRP decrypted
        assert kinds["OAP Signal"] > 0  # the blocks


def test_demo_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--requestors", "2", "--size-mib", "0.25", "--loss", "0", "--seed", "5"]) == 0
    assert "2/2 requestors verified" in capsys.readouterr().out
    for bad in (["--requestors", "0"], ["--size-mib", "0"], ["--loss", "1"]):
        with pytest.raises(SystemExit):
            main(bad)


async def test_interop_capture_decodes_cleanly_in_tshark(tmp_path: Path) -> None:
    require_tshark()
    pcap = tmp_path / "interop.pcap"
    done = await exchange(pcap)
    assert "OAP change + signal events" in done
    report = run_tshark(pcap, _provider_port(pcap))
    assert report.problems == []
    kinds = {info.split(" [")[0].strip() for info in report.infos}
    for wanted in (
        "DSP Open",
        "OAP Provide",
        "OAP Get",
        "OAP Set",
        "OAP Invoke",
        "OAP Subscribe",
        "OAP Register",
        "OAP Signal",
        "OAP Change",
        "OAP Exception Response",
        "DPP Ping",
        "DPP Ping Response",
    ):
        assert wanted in kinds


async def test_secure_interop_capture_decrypts_in_tshark(tmp_path: Path) -> None:
    require_tshark()
    from dofpy.security.keylog import parse_keylog, tshark_key_options  # noqa: PLC0415
    from interop.secure_check import CLIENT_ID, encrypted_left, secure_exchange  # noqa: PLC0415

    pcap, keylog, trp_pcap = tmp_path / "s.pcap", tmp_path / "keys.log", tmp_path / "trp.pcap"
    _done, domain = await secure_exchange(pcap, keylog, trp_pcap)
    keys = parse_keylog(keylog.read_text().splitlines())
    assert len(keys) == 1
    port = _provider_port(pcap)
    for extra in (
        tshark_key_options(keys),
        [
            "-o",
            f"uat:custom_dof_identsecret_list:{domain.credential_for(CLIENT_ID).wireshark_uat()}",
        ],
    ):
        report = run_tshark(pcap, port, extra)
        assert report.problems == []
        assert encrypted_left(report) == []
        kinds = {info.split(" [")[0].strip() for info in report.infos}
        assert {
            "TEP Rekey",
            "TEP Accept",
            "TEP Confirm",
            "OAP Get",
            "OAP Set",
            "OAP Invoke",
            "OAP Subscribe",
            "OAP Register",
            "OAP Signal",
            "OAP Change",
        } <= kinds
    trp = run_tshark(trp_pcap, _provider_port(trp_pcap))
    assert trp.problems == [] and trp.packets == 2
