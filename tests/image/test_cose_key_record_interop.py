"""Our confidential images' key records against pycose, an implementation we
did not write (the same checks as ``make interop``'s
``interop.cose_key_record_check``)."""

from __future__ import annotations

import pytest

pytest.importorskip("pycose", reason="pycose (the test extra) is not installed")

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from dofpy_services.image.encryption import ContentKey, wrap_content_key
from interop.cose_check import Check
from interop.cose_key_record_check import pycose_unwrap, run_checks

CHECKS = run_checks()


@pytest.mark.parametrize("check", CHECKS, ids=[c.name for c in CHECKS])
def test_pycose_agrees(check: Check) -> None:
    assert check.ok, f"check failed: {check.name}"


def test_the_checks_cover_both_directions_and_refusals() -> None:
    names = " | ".join(c.name for c in CHECKS)
    for part in ("pycose unwraps", "decrypts the image", "refuses", "dofpy unwraps"):
        assert part in names


def test_pycose_finds_no_key_for_a_device_not_among_the_recipients() -> None:
    record = wrap_content_key(ContentKey.generate(), [X25519PrivateKey.generate().public_key()])
    assert pycose_unwrap(record, X25519PrivateKey.generate()) is None
