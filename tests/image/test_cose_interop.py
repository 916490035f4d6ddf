"""Our COSE manifests against pycose, an implementation we did not write
(the same checks as ``make interop``'s ``interop.cose_check``)."""

from __future__ import annotations

import pytest

pytest.importorskip("pycose", reason="pycose (the test extra) is not installed")

from dofpy.image import Algorithm, Party, sign_manifest
from interop.cose_check import Check, pycose_verifies, run_checks
from tests.image.signing_fixtures import key, make_manifest

CHECKS = run_checks()


@pytest.mark.parametrize("check", CHECKS, ids=[c.name for c in CHECKS])
def test_pycose_agrees(check: Check) -> None:
    assert check.ok, f"expected {check.expected}, got {check.got}"


def test_the_checks_cover_both_directions_and_tampering() -> None:
    names = " | ".join(c.name for c in CHECKS)
    for part in (
        "pycose verifies COSE_Sign1 manifest, Ed25519",
        "ES256",
        "COSE_Sign manifest",
        "refuses",
        "trust root",
        "dofpy verifies a COSE_Sign1 manifest signed by pycose",
    ):
        assert part in names


@pytest.mark.parametrize("algorithm", list(Algorithm))
def test_pycose_refuses_the_wrong_key(algorithm: Algorithm) -> None:
    signed = sign_manifest(make_manifest(), key(1, algorithm), Party.MANUFACTURER, single=True)
    assert pycose_verifies(signed.encode(), [key(1, algorithm).public_key]) == [True]
    assert pycose_verifies(signed.encode(), [key(2, algorithm).public_key]) == [False]
