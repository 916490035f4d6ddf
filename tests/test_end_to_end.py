"""The demo and the tshark interop exchange, end to end over loopback."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from dofpy.testing.tshark import require_tshark
from dofpy_services.demo import main, run_demo
from interop.tshark_check import _provider_port, exchange, run_tshark


async def test_demo_delivers_verified_copies_through_the_relay_over_a_lossy_link(
    tmp_path: Path,
) -> None:
    out = io.StringIO()
    pcap = tmp_path / "demo.pcap"
    status = await run_demo(requestors=3, size_mib=0.5, loss=0.05, seed=3, pcap=pcap, out=out)
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
    assert pcap.stat().st_size > 24
    assert (tmp_path / "demo.pcap.keys").read_text().count("\n") == 1


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
