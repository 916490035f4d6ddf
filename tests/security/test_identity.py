"""Domains, identities and key credentials: the HKDF derivation."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from dofpy.security.identity import Domain, KeyCredential, NodeIdentity, derive_identity_secret
from dofpy.wire.oid import OID

DOMAIN = OID(6, b"example.org")
NODE = OID(3, b"dev@example.org")
MASTER = bytes(range(32))


def test_secret_is_hkdf_of_the_documented_inputs() -> None:
    info = DOMAIN.encode() + NODE.encode() + b"key credential" + (0).to_bytes(4, "big")
    expected = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=b"dofpy identity secret v1", info=info
    ).derive(MASTER)
    assert derive_identity_secret(MASTER, DOMAIN, NODE) == expected
    assert Domain(DOMAIN, MASTER).credential_for(NODE).secret == expected


def test_secrets_differ_per_identity_domain_generation_and_purpose() -> None:
    base = derive_identity_secret(MASTER, DOMAIN, NODE)
    assert derive_identity_secret(MASTER, DOMAIN, OID(3, b"other")) != base
    assert derive_identity_secret(MASTER, OID(6, b"other.org"), NODE) != base
    assert derive_identity_secret(MASTER, DOMAIN, NODE, generation=1) != base
    assert derive_identity_secret(MASTER, DOMAIN, NODE, purpose="other") != base
    assert derive_identity_secret(bytes(32), DOMAIN, NODE) != base
    # Deterministic: replicas with the same master key agree.
    assert derive_identity_secret(MASTER, DOMAIN, NODE) == base


def test_repr_hides_keys() -> None:
    credential = Domain(DOMAIN, MASTER).credential_for(NODE)
    assert credential.secret.hex() not in repr(credential)
    assert MASTER.hex() not in repr(Domain(DOMAIN, MASTER))
    assert str(credential.node) == "[{03}:dev@example.org] in [{06}:example.org]"


def test_wireshark_uat_line() -> None:
    credential = Domain(DOMAIN, MASTER).credential_for(NODE)
    assert credential.wireshark_uat() == (
        f'"{DOMAIN.encode().hex()}","{NODE.encode().hex()}","{credential.secret.hex()}"'
    )


@pytest.mark.parametrize(
    ("build", "reason"),
    [
        (lambda: Domain(DOMAIN, bytes(31)), "master key"),
        (lambda: Domain(OID(0), MASTER), "domain"),
        (lambda: NodeIdentity(DOMAIN, OID(0)), "identity"),
        (lambda: KeyCredential(NodeIdentity(DOMAIN, NODE), bytes(16)), "secret"),
        (lambda: KeyCredential(NodeIdentity(DOMAIN, NODE), bytes(32), -1), "generation"),
        (lambda: derive_identity_secret(MASTER, DOMAIN, NODE, purpose=""), "purpose"),
        (lambda: derive_identity_secret(MASTER, DOMAIN, NODE, 2**32), "generation"),
        (lambda: derive_identity_secret(bytes(5), DOMAIN, NODE), "master key"),
    ],
)
def test_bad_values_are_refused(build: object, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        build()  # type: ignore[operator]
