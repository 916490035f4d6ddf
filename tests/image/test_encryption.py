"""Confidential images: AES-256-CTR under a fresh content key, wrapped to
X25519 recipients (ECDH-ES + A256KW, a COSE_Encrypt-shaped key record); the
device accepts the plaintext only when it is the signed one."""

from __future__ import annotations

import contextlib
import random
from pathlib import Path

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import given, settings
from hypothesis import strategies as st

from dofpy.errors import BadPacket
from dofpy_services.image.encryption import (
    ContentKey,
    DecryptionError,
    EncryptionInfo,
    decode_key_record_untrusted,
    recipient_kid,
    unwrap_content_key_untrusted,
    wrap_content_key,
)
from dofpy_services.image.publish import add_image_file, write_decrypted
from dofpy_services.image.store import ImageStore
from tests.image._store_helpers import describe_test_manifest

KEY = ContentKey(bytes(range(32)), bytes(range(100, 116)))


def test_ctr_in_pieces_equals_aes_256_ctr_over_the_whole() -> None:
    data = random.Random(1).randbytes(5000)
    pieces = [data[i : i + 333] for i in range(0, len(data), 333)]
    whole = Cipher(algorithms.AES(KEY.key), modes.CTR(KEY.iv)).encryptor().update(data)
    assert b"".join(KEY.apply(pieces)) == whole
    assert b"".join(KEY.apply([whole])) == data


def test_the_content_key_unwraps_only_for_its_recipients() -> None:
    device_class = [X25519PrivateKey.generate() for _ in range(2)]
    stranger = X25519PrivateKey.generate()
    record = wrap_content_key(KEY, [k.public_key() for k in device_class])
    for private in device_class:
        assert unwrap_content_key_untrusted(record, private) == KEY
    with pytest.raises(DecryptionError, match="no recipient"):
        unwrap_content_key_untrusted(record, stranger)
    decoded = decode_key_record_untrusted(record)
    assert decoded.kids == tuple(recipient_kid(k.public_key()) for k in device_class)
    assert decoded.iv == KEY.iv
    assert KEY.key not in record


def test_a_tampered_wrapped_key_does_not_unwrap() -> None:
    private = X25519PrivateKey.generate()
    protected, unprotected, _, recipients = cbor2.loads(
        wrap_content_key(KEY, [private.public_key()])
    ).value
    header, recipient_unprotected, wrapped = recipients[0]
    flipped = bytes([wrapped[0] ^ 1]) + wrapped[1:]
    tampered = [
        protected,
        dict(unprotected),
        None,
        [[header, dict(recipient_unprotected), flipped]],
    ]
    tampered[3][0][1][-1] = dict(recipient_unprotected[-1])
    with pytest.raises(DecryptionError, match="does not unwrap"):
        unwrap_content_key_untrusted(cbor2.dumps(cbor2.CBORTag(96, tampered)), private)


def test_the_key_record_is_cose_encrypt_shaped() -> None:
    private = X25519PrivateKey.generate()
    value = cbor2.loads(wrap_content_key(KEY, [private.public_key()]))
    assert value.tag == 96
    protected, unprotected, ciphertext, recipients = value.value
    assert cbor2.loads(protected) == {1: -65532}  # A256CTR
    assert unprotected == {5: KEY.iv} and ciphertext is None
    recipient_protected, recipient_unprotected, wrapped = recipients[0]
    assert cbor2.loads(recipient_protected) == {1: -31}  # ECDH-ES + A256KW
    assert recipient_unprotected[-1][1] == 1 and recipient_unprotected[-1][-1] == 4  # OKP X25519
    assert len(wrapped) == 40


@settings(max_examples=80, deadline=None)
@given(st.binary(max_size=300))
def test_key_record_decoding_raises_only_bad_packet(data: bytes) -> None:
    with contextlib.suppress(BadPacket):
        decode_key_record_untrusted(data)


@settings(max_examples=30, deadline=None)
@given(
    key=st.binary(min_size=32, max_size=32),
    iv=st.binary(min_size=16, max_size=16),
    count=st.integers(min_value=1, max_value=3),
)
def test_key_record_round_trip(key: bytes, iv: bytes, count: int) -> None:
    privates = [X25519PrivateKey.from_private_bytes(bytes([n + 1]) * 32) for n in range(count)]
    content = ContentKey(key, iv)
    record = wrap_content_key(content, [p.public_key() for p in privates])
    assert decode_key_record_untrusted(record).iv == iv
    assert unwrap_content_key_untrusted(record, privates[-1]) == content


def test_encryption_info_round_trip_and_refusals() -> None:
    info = EncryptionInfo(KEY.iv, 10, bytes(32), (bytes(range(32)),))
    assert (
        EncryptionInfo.from_cbor_map_untrusted(cbor2.loads(cbor2.dumps(info.to_cbor_map()))) == info
    )
    bad = info.to_cbor_map() | {1: -65534}
    with pytest.raises(BadPacket, match="not A256CTR"):
        EncryptionInfo.from_cbor_map_untrusted(bad)
    with pytest.raises(BadPacket):
        EncryptionInfo.from_cbor_map_untrusted({1: -65532})


def test_publish_encrypted_then_decrypt_on_the_device(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "store", describe_test_manifest, chunk_bytes=700)
    plaintext = random.Random(2).randbytes(10_000)
    source = tmp_path / "image.bin"
    source.write_bytes(plaintext)
    device = X25519PrivateKey.generate()
    prepared = add_image_file(store, source, 256, recipients=[device.public_key()])
    assert prepared.encryption is not None
    served = store.image_path(prepared.hashes.manifest.object_id).read_bytes()
    assert len(served) == len(plaintext) and served != plaintext
    assert plaintext[:64] not in served
    record = store.read_object("records", prepared.encryption.records[0])
    key = unwrap_content_key_untrusted(record, device)
    target = tmp_path / "installed.bin"
    assert write_decrypted([served], key, prepared.encryption, target) == len(plaintext)
    assert target.read_bytes() == plaintext


def test_a_substituted_key_never_installs_a_plaintext(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "store", describe_test_manifest)
    source = tmp_path / "image.bin"
    source.write_bytes(b"firmware" * 500)
    device = X25519PrivateKey.generate()
    prepared = add_image_file(store, source, 256, recipients=[device.public_key()])
    assert prepared.encryption is not None
    served = store.image_path(prepared.hashes.manifest.object_id).read_bytes()
    # An attacker's record: another key, same counter block, wrapped to the device.
    forged = ContentKey(bytes(32), prepared.encryption.iv)
    key = unwrap_content_key_untrusted(wrap_content_key(forged, [device.public_key()]), device)
    target = tmp_path / "installed.bin"
    target.write_bytes(b"the image running now")
    with pytest.raises(DecryptionError, match="not the one the manifest signed"):
        write_decrypted([served], key, prepared.encryption, target)
    assert target.read_bytes() == b"the image running now"
    assert list(tmp_path.glob(".*partial")) == []
