"""``dofpy update campaign terms|approve|check`` and ``dofpy update audit
verify`` on files, as an operator runs them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dofpy.image import Party
from dofpy_services.cli import main
from dofpy_services.image.keys import write_private_key, write_public_key
from dofpy_services.update.audit import AuditLog, read_trail, write_trail
from tests.image.signing_fixtures import (
    Keys,
    ed25519_key,
    make_manifest,
    make_root,
    sign,
    sign_root,
)

KEYS = Keys.make()
SERVICE = ed25519_key(50)


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    for name in ("m1", "m2", "sp", "op", "outsider"):
        write_private_key(f"{name}.key", getattr(KEYS, name))
    root = make_root(KEYS)
    Path("root.cbor").write_bytes(
        sign_root(root, (KEYS.m1, Party.MANUFACTURER), (KEYS.m2, Party.MANUFACTURER))
    )
    manifest = make_manifest()
    Path("image.manifest").write_bytes(
        sign(manifest, (KEYS.m1, Party.MANUFACTURER), (KEYS.m2, Party.MANUFACTURER))
    )
    write_private_key("update.key", SERVICE)
    write_public_key("update.pub", SERVICE.public_key)
    return tmp_path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def make_terms(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys, "update", "campaign", "terms", "--name", "spring", "--manifest", "image.manifest",
        "--class", "sensor", "--not-version", "2.0", "--require", "manufacturer=1",
        "--require", "operator=1", "--start", "1800000000", "--deadline", "1800604800",
        "--out", "terms.json",
    )  # fmt: skip
    assert code == 0 and "digest" in out


def approve(capsys: pytest.CaptureFixture[str], key: str, party: str, out: str) -> int:
    argv = ["update", "campaign", "approve", "terms.json", "--key", key, "--party", party]
    return run(capsys, *argv, "--out", out)[0]


def test_approve_then_check(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_terms(capsys)
    assert json.loads(Path("terms.json").read_text())["policy"] == {
        "manufacturer": 1,
        "operator": 1,
    }
    check = ["update", "campaign", "check", "terms.json", "--trust-root", "root.cbor"]
    code, out, err = run(capsys, *check)
    assert code == 1 and "may not start" in err and "manufacturer: 0 of 1 needed" in out, err
    assert approve(capsys, "m1.key", "manufacturer", "m1.approval") == 0
    # The service provider's key signing as the operator: not counted.
    assert approve(capsys, "sp.key", "operator", "sp.approval") == 0
    code, out, _ = run(capsys, *check, "--approval", "m1.approval", "--approval", "sp.approval")
    assert code == 1 and "key belongs to another party" in out
    assert approve(capsys, "op.key", "operator", "op.approval") == 0
    code, out, _ = run(capsys, *check, *(f"--approval={n}.approval" for n in ("m1", "sp", "op")))
    assert code == 0 and "approved: the campaign may start" in out


def test_audit_verify(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = AuditLog("audit.log", SERVICE)
    for n in range(4):
        log.append(now=1_800_000_000 + n, actor="alice", action=f"step {n}")
    Path("audit.checkpoint").write_bytes(log.checkpoint(now=1_800_000_010))
    verify = ["update", "audit", "verify", "audit.log", "--service-key", "update.pub"]
    code, out, _ = run(capsys, *verify, "--checkpoint", "audit.checkpoint")
    assert code == 0 and "4 entries verified" in out
    trail = read_trail("audit.log")
    write_trail("audit.log", trail[:3])
    code, out, _ = run(capsys, *verify)
    assert code == 0 and "a cut-off end is not detected" in out
    code, _, err = run(capsys, *verify, "--checkpoint", "audit.checkpoint")
    assert code == 1 and "truncated" in err
    write_trail("audit.log", [trail[0], trail[2], trail[1], trail[3]])
    code, _, err = run(capsys, *verify)
    assert code == 1 and "out of sequence" in err


def test_serve_refuses_without_the_campaign_store(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "update", "serve")
    assert code == 2 and "the campaign store" in err


def test_the_update_service_lists_its_commands(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["update", "--help"]) == 0
    out = capsys.readouterr().out
    for command in ("plan", "report", "campaign", "audit"):
        assert command in out
