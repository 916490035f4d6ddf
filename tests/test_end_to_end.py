"""The demo and the tshark interop exchange, end to end over loopback."""

from __future__ import annotations

from pathlib import Path

import pytest

from dofpy_services.demo import run_demo
from interop.tshark_check import _provider_port, exchange, run_tshark
from tests.tshark_oracle import require_tshark


async def test_demo_manages_every_device(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await run_demo(4, tmp_path / "demo.pcap") == 0
    out = capsys.readouterr().out
    assert "managed   4/4 devices" in out
    assert out.count("ready (") == 4
    assert "TestFailed" not in out  # device 6 is the one that fails its test
    assert (tmp_path / "demo.pcap").stat().st_size > 24


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
