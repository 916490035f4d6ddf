"""``dofpy image keygen | trust-root | sign | verify``: exit codes, key file
modes, refusals an operator understands."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from dofpy.image import decode_cose_untrusted
from dofpy_services.cli import main
from tests.image.signing_fixtures import DEVICE_CLASS, IMAGE, NOW, VENDOR, make_manifest

AT = ["--at", str(NOW)]
ROOT_EXPIRES = "2030-01-01"


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _keys(capsys: pytest.CaptureFixture[str], *names: str) -> None:
    for name in names:
        algorithm = "es256" if name == "m2" else "ed25519"
        assert run(capsys, "image", "keygen", name, "--algorithm", algorithm)[0] == 0


def _signed_root(capsys: pytest.CaptureFixture[str]) -> None:
    """root.cbor: m1, m2 (manufacturer), sp; manifests need 2 manufacturer AND
    1 service-provider, trust roots 2 manufacturer; signed by m1 and m2."""
    _keys(capsys, "m1", "m2", "sp")
    code, out, _ = run(
        capsys,
        "image", "trust-root", "init", "--vendor", str(VENDOR),
        "--key", "m1.pub:manufacturer:m1", "--key", "m2.pub:manufacturer:m2",
        "--key", "sp.pub:service-provider:sp",
        "--threshold", "manufacturer=2", "--threshold", "service-provider=1",
        "--root-threshold", "manufacturer=2", "--expires", ROOT_EXPIRES, "--out", "root.cbor",
    )  # fmt: skip
    assert code == 0 and "manifests need 2 manufacturer AND 1 service-provider" in out
    for signer in ("m1", "m2"):
        assert run(capsys, "image", "trust-root", "sign", "root.cbor", "--key", signer)[0] == 0


def test_keygen_writes_a_private_key_only_its_owner_may_read(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "image", "keygen", "alice")
    assert code == 0 and "(mode 0600)" in out
    assert stat.S_IMODE((workdir / "alice").stat().st_mode) == 0o600
    assert b"BEGIN PRIVATE KEY" in (workdir / "alice").read_bytes()
    assert b"BEGIN PUBLIC KEY" in (workdir / "alice.pub").read_bytes()
    before = (workdir / "alice").read_bytes()
    code, _, err = run(capsys, "image", "keygen", "alice")
    assert code == 1 and "exists; refusing to overwrite a key" in err
    assert (workdir / "alice").read_bytes() == before


def test_keygen_under_a_permissive_umask_is_still_0600(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old = os.umask(0)
    try:
        assert run(capsys, "image", "keygen", "bob", "--algorithm", "es256")[0] == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE((workdir / "bob").stat().st_mode) == 0o600


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660])
def test_a_private_key_others_may_read_is_refused(
    workdir: Path, capsys: pytest.CaptureFixture[str], mode: int
) -> None:
    (workdir / "m.cbor").write_bytes(make_manifest().encode())
    _keys(capsys, "m1")
    (workdir / "m1").chmod(mode)
    code, _, err = run(capsys, "image", "sign", "m.cbor", "--key", "m1", "--party", "manufacturer")
    assert code == 1
    assert f"(mode {mode:04o}); a private key must be private: chmod 600 m1" in err
    assert (workdir / "m.cbor").read_bytes() == make_manifest().encode()  # unchanged


def test_a_passphrase_protected_key(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (workdir / "pass").write_text("correct horse\n")
    (workdir / "wrong").write_text("battery staple\n")
    assert run(capsys, "image", "keygen", "k", "--passphrase-file", "pass")[0] == 0
    assert b"ENCRYPTED PRIVATE KEY" in (workdir / "k").read_bytes()
    (workdir / "m.cbor").write_bytes(make_manifest().encode())
    sign = ["image", "sign", "m.cbor", "--key", "k", "--party", "manufacturer"]
    code, _, err = run(capsys, *sign)
    assert code == 1 and "is it passphrase-protected? give --passphrase-file" in err
    code, _, err = run(capsys, *sign, "--passphrase-file", "wrong")
    assert code == 1 and "k is not a usable private key" in err
    assert run(capsys, *sign, "--passphrase-file", "pass")[0] == 0


def test_sign_and_verify_until_every_threshold_is_met(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _signed_root(capsys)
    (workdir / "m.cbor").write_bytes(make_manifest().encode())
    (workdir / "fw.bin").write_bytes(IMAGE)
    verify = ["image", "verify", "m.cbor", "--trust-root", "root.cbor", *AT]

    code, out, _ = run(
        capsys, "image", "sign", "m.cbor", "--key", "m1", "--trust-root", "root.cbor"
    )
    assert code == 0 and "as manufacturer" in out and "(COSE_Sign, 1 signatures)" in out
    code, out, _ = run(capsys, *verify)
    assert code == 1
    assert "  manufacturer: 1 of 2 needed, NOT met" in out
    assert "  service-provider: 0 of 1 needed, NOT met" in out
    assert "REFUSED (BelowThreshold)" in out

    # The service provider's key, signing as a manufacturer, counts for nothing.
    code, _, _ = run(capsys, "image", "sign", "m.cbor", "--key", "sp", "--party", "manufacturer")
    assert code == 0
    code, out, _ = run(capsys, *verify)
    assert code == 1 and "signing as manufacturer: key belongs to another party" in out

    assert run(capsys, "image", "sign", "m.cbor", "--key", "m2", "--party", "manufacturer")[0] == 0
    code, out, _ = run(capsys, *verify)
    assert code == 1 and "REFUSED (BelowThreshold)" in out and "service-provider has 0" in out

    message = decode_cose_untrusted((workdir / "m.cbor").read_bytes())
    assert len(message.signatures) == 3
    code, _, err = run(capsys, "image", "sign", "m.cbor", "--key", "sp", "--party", "manufacturer")
    assert code == 1 and "already signed this message" in err


def test_a_fully_signed_manifest_verifies_with_its_image(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _signed_root(capsys)
    (workdir / "m.cbor").write_bytes(make_manifest().encode())
    for signer, party in (
        ("m1", "manufacturer"),
        ("m2", "manufacturer"),
        ("sp", "service-provider"),
    ):
        assert run(capsys, "image", "sign", "m.cbor", "--key", signer, "--party", party)[0] == 0
    (workdir / "fw.bin").write_bytes(IMAGE)
    (workdir / "bad.bin").write_bytes(IMAGE[:-1] + b"!")
    (workdir / "long.bin").write_bytes(IMAGE + b"!")
    verify = ["image", "verify", "m.cbor", "--trust-root", "root.cbor", *AT]

    code, out, _ = run(capsys, *verify, "--image", "fw.bin")
    assert code == 0, out
    assert "manifest 2.4.1 (sequence 24), kind normal" in out
    assert "  manufacturer: 2 of 2 needed, met" in out
    assert "  service-provider: 1 of 1 needed, met" in out
    assert out.rstrip().endswith("ACCEPTED: every threshold is met; image fw.bin matches")

    code, out, _ = run(capsys, *verify, "--image", "bad.bin")
    assert code == 1 and "REFUSED (ImageMismatch)" in out
    code, out, _ = run(capsys, *verify, "--image", "long.bin")
    assert code == 1 and "REFUSED (TooMuchData)" in out
    code, out, _ = run(capsys, *verify, "--installed-sequence", "24")
    assert code == 1 and "REFUSED (Rollback)" in out
    code, out, _ = run(capsys, *verify, "--class", str(VENDOR))
    assert code == 1 and "REFUSED (WrongClass)" in out
    code, out, _ = run(capsys, "image", "verify", "m.cbor", "--trust-root", "root.cbor",
                       "--at", "2027-03-01")  # fmt: skip
    assert code == 1 and "REFUSED (Expired)" in out and "expired at 2027-02-14" in out
    assert run(capsys, *verify, "--class", str(DEVICE_CLASS))[0] == 0


def test_a_single_signer_manifest(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _keys(capsys, "k")
    (workdir / "m.cbor").write_bytes(make_manifest().encode())
    code, out, _ = run(
        capsys, "image", "sign", "m.cbor", "--key", "k", "--party", "manufacturer", "--single"
    )
    assert code == 0 and "(COSE_Sign1)" in out
    assert (workdir / "m.cbor").read_bytes()[0] == 0xD2
    code, _, err = run(capsys, "image", "sign", "m.cbor", "--key", "k", "--party", "operator")
    assert code == 1 and "exactly one signer" in err


def test_a_rotation_through_the_cli(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _signed_root(capsys)
    _keys(capsys, "m3")
    code, out, _ = run(
        capsys, "image", "trust-root", "add-key", "root.cbor", "--party", "manufacturer",
        "--public-key", "m3.pub", "--name", "m3", "--out", "v2.cbor",
    )  # fmt: skip
    assert code == 0 and "trust root draft version 2 written to v2.cbor (unsigned)" in out
    code, _, err = run(capsys, "image", "trust-root", "add-key", "root.cbor", "--party",
                       "operator", "--public-key", "m3.pub")  # fmt: skip
    assert code == 2 and "is signed: give --out" in err
    code, out, _ = run(capsys, "image", "trust-root", "remove-key", "v2.cbor",
                       "--public-key", "m2.pub")  # fmt: skip
    assert code == 0 and "(m2)" not in out and "(m3)" in out

    verify = ["image", "trust-root", "verify", "v2.cbor", "--current", "root.cbor", *AT]
    assert run(capsys, *verify)[0] == 1  # an unsigned draft
    code, out, _ = run(capsys, "image", "trust-root", "sign", "v2.cbor", "--key", "m1",
                       "--current", "root.cbor")  # fmt: skip
    assert code == 0 and "more signatures are needed" in out
    code, out, _ = run(capsys, *verify)
    assert code == 1 and "REFUSED (BelowThreshold)" in out
    assert "checked with the keys of the installed version 1" in out
    # m2, removed in version 2, still signs as a key of version 1.
    code, out, _ = run(capsys, "image", "trust-root", "sign", "v2.cbor", "--key", "m2",
                       "--current", "root.cbor")  # fmt: skip
    assert code == 0
    code, out, _ = run(capsys, *verify)
    assert code == 1 and "checked with its own keys: below threshold" in out
    code, out, _ = run(capsys, "image", "trust-root", "sign", "v2.cbor", "--key", "m3",
                       "--current", "root.cbor")  # fmt: skip
    assert code == 0 and "every threshold is met" in out
    code, out, _ = run(capsys, *verify)
    assert code == 0 and "ACCEPTED: rotation from version 1 to version 2" in out

    # A manifest signed with the removed key m2 now fails verification.
    (workdir / "v2-root.cbor").write_bytes((workdir / "v2.cbor").read_bytes())
    (workdir / "m.cbor").write_bytes(make_manifest().encode())
    for signer, party in (
        ("m1", "manufacturer"),
        ("m2", "manufacturer"),
        ("sp", "service-provider"),
    ):
        assert run(capsys, "image", "sign", "m.cbor", "--key", signer, "--party", party)[0] == 0
    code, out, _ = run(capsys, "image", "verify", "m.cbor", "--trust-root", "v2-root.cbor", *AT)
    assert code == 1 and "REFUSED (RemovedKey)" in out
    code, out, _ = run(capsys, "image", "verify", "m.cbor", "--trust-root", "root.cbor", *AT)
    assert code == 0


def test_verify_needs_a_signed_trust_root(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _keys(capsys, "k")
    run(
        capsys, "image", "trust-root", "init", "--vendor", str(VENDOR), "--key",
        "k.pub:manufacturer", "--threshold", "manufacturer=1", "--out", "draft.cbor",
    )  # fmt: skip
    (workdir / "m.cbor").write_bytes(make_manifest().encode())
    run(capsys, "image", "sign", "m.cbor", "--key", "k", "--party", "manufacturer")
    code, _, err = run(capsys, "image", "verify", "m.cbor", "--trust-root", "draft.cbor", *AT)
    assert code == 1 and "unsigned trust root draft: sign it first" in err


def test_operator_errors_are_one_line(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _keys(capsys, "k")
    code, _, err = run(
        capsys, "image", "trust-root", "init", "--vendor", "not-a-uuid", "--key",
        "k.pub:manufacturer", "--threshold", "manufacturer=1", "--out", "r.cbor",
    )  # fmt: skip
    assert code == 2 and err == "dofpy: error: bad vendor 'not-a-uuid': expected a UUID\n"
    code, _, err = run(
        capsys, "image", "trust-root", "init", "--vendor", str(VENDOR), "--key",
        "k.pub:vendor", "--threshold", "manufacturer=1", "--out", "r.cbor",
    )  # fmt: skip
    assert code == 2 and "unknown party 'vendor'" in err
    code, _, err = run(
        capsys, "image", "trust-root", "init", "--vendor", str(VENDOR), "--key",
        "k.pub:manufacturer", "--threshold", "manufacturer=2", "--out", "r.cbor",
    )  # fmt: skip
    assert code == 2 and "needs 2 manufacturer signatures but the trust root lists 1" in err
    (workdir / "junk").write_bytes(b"\xd8\x62junk")
    code, _, err = run(capsys, "image", "sign", "junk", "--key", "k", "--party", "operator")
    assert code == 1 and "junk is not a signed document" in err


@pytest.mark.parametrize(
    "argv", [["image"], ["image", "trust-root"], ["image", "sign"], ["image", "verify"]]
)
def test_help_has_an_example(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*argv, "--help"]) == 0
    out = capsys.readouterr().out
    assert "dofpy image" in out


def test_the_image_service_lists_its_commands(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["image", "--help"]) == 0
    out = capsys.readouterr().out
    assert "commands: serve, keygen, trust-root, sign, verify" in out
