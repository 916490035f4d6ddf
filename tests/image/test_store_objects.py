"""The image store's objects: streamed hashing equal to hashing whole, publish
refusals, latest per class, immutability, leaf hashes for serving, gc's
choices, and the read-only block store a provider serves from."""

from __future__ import annotations

import itertools
import os
import random
import shutil
import stat
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dofpy.transfer.hashing import ObjectHasher
from dofpy.transfer.manifest import ObjectHashes
from dofpy_services.image.store import ImageBlockStore, ImageStore, StoreError
from tests.image._store_helpers import describe_test_manifest, stand_in_manifest

LEAF = 64


@settings(max_examples=60, deadline=None)
@given(
    data=st.binary(min_size=1, max_size=3000),
    leaf_size=st.sampled_from([64, 100, 128, 1024]),
    cuts=st.lists(st.integers(min_value=0, max_value=3000), max_size=8),
)
def test_streamed_hashing_equals_hashing_the_whole_object(
    data: bytes, leaf_size: int, cuts: list[int]
) -> None:
    hasher = ObjectHasher(leaf_size)
    points = sorted({0, len(data), *(c for c in cuts if c < len(data))})
    for start, end in itertools.pairwise(points):
        hasher.update(data[start:end])
    streamed = hasher.finish()
    whole = ObjectHashes.build(data, leaf_size)
    assert streamed.manifest == whole.manifest
    assert streamed.leaf_hashes == whole.leaf_hashes


def test_an_empty_object_has_no_manifest() -> None:
    with pytest.raises(ValueError, match="at least one byte"):
        ObjectHasher(LEAF).finish()


def _store(root: Path) -> ImageStore:
    return ImageStore(root, describe_test_manifest, chunk_bytes=256)


def test_publish_list_latest_and_read_back(tmp_path: Path) -> None:
    store = _store(tmp_path)
    data = random.Random(3).randbytes(1000)
    source = tmp_path / "image.bin"
    source.write_bytes(data)
    image = store.add_image_file(source, LEAF).manifest
    assert image == ObjectHashes.build(data, LEAF).manifest
    first = store.add_manifest(stand_in_manifest(image, sequence=1))
    second = store.add_manifest(stand_in_manifest(image, sequence=5, version="2.0"))
    other = store.add_manifest(stand_in_manifest(image, class_id="class-b", sequence=2))
    assert store.add_manifest(stand_in_manifest(image, sequence=1)) == first  # idempotent
    assert store.latest("class-a") == second
    assert store.latest("class-b") == other
    assert store.latest("class-c") is None
    listed = store.published()
    assert [(e.summary.class_id, e.summary.sequence, e.latest) for e in listed] == [
        ("class-a", 1, False),
        ("class-a", 5, True),
        ("class-b", 2, True),
    ]
    assert b"".join(store.image_chunks(image.object_id)) == data
    assert store.manifest(second) == stand_in_manifest(image, sequence=5, version="2.0")
    # Another process sees what this one published.
    again = _store(tmp_path)
    assert set(again.manifests()) == {first, second, other}
    assert again.check() == []


def test_objects_are_read_only_and_never_rewritten(tmp_path: Path) -> None:
    store = _store(tmp_path)
    hashes = store.add_image([b"a" * 300], LEAF)
    path = store.image_path(hashes.manifest.object_id)
    mode = path.stat().st_mode
    assert not mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)
    inode = path.stat().st_ino
    store.add_image([b"a" * 100, b"a" * 200], LEAF)  # the same bytes again
    assert path.stat().st_ino == inode
    assert list((tmp_path / "images").glob(".tmp-*")) == []


def test_a_manifest_is_refused_without_its_image_or_its_records(tmp_path: Path) -> None:
    store = _store(tmp_path)
    absent = ObjectHashes.build(b"never stored" * 10, LEAF).manifest
    with pytest.raises(StoreError, match="not in the store"):
        store.add_manifest(stand_in_manifest(absent))
    image = store.add_image([b"stored" * 20], LEAF).manifest
    with pytest.raises(StoreError, match=r"record .* not in the store"):
        store.add_manifest(stand_in_manifest(image, references=(bytes(32),)))
    with pytest.raises(StoreError, match="not a manifest"):
        store.add_manifest(b"\xff not cbor")
    assert store.manifests() == {}
    assert list((tmp_path / "manifests").iterdir()) == []


def test_a_manifest_that_does_not_match_its_image_is_refused(tmp_path: Path) -> None:
    store = _store(tmp_path)
    image = store.add_image([b"stored" * 20], LEAF).manifest
    forged = ObjectHashes.build(b"other" * 24, LEAF).manifest
    lying = type(image)(image.object_id, image.size, image.leaf_size, forged.merkle_root)
    with pytest.raises(StoreError, match="does not match"):
        store.add_manifest(stand_in_manifest(lying))
    assert store.manifests() == {}


def test_another_leaf_size_is_hashed_again_on_publish(tmp_path: Path) -> None:
    store = _store(tmp_path)
    data = random.Random(4).randbytes(900)
    store.add_image([data], LEAF)
    at_128 = ObjectHashes.build(data, 128)
    store.add_manifest(stand_in_manifest(at_128.manifest))
    assert store.hashes(at_128.manifest).leaf_hashes == at_128.leaf_hashes


def test_corruption_is_found_by_check(tmp_path: Path) -> None:
    store = _store(tmp_path)
    image = store.add_image([b"precious" * 40], LEAF).manifest
    store.add_manifest(stand_in_manifest(image))
    path = store.image_path(image.object_id)
    os.chmod(path, 0o644)
    with path.open("r+b") as file:
        file.write(b"X")
    problems = store.check()
    assert any("does not match its digest" in p for p in problems)
    assert any("writable" in p for p in problems)


def test_leaf_hashes_that_do_not_match_are_computed_again(tmp_path: Path) -> None:
    store = _store(tmp_path)
    data = b"leaf hashes" * 50
    hashes = store.add_image([data], LEAF)
    leaves = next((tmp_path / "images").glob("*.leaves"))
    os.chmod(leaves, 0o644)
    leaves.write_bytes(bytes(len(hashes.leaf_hashes)))
    assert store.hashes(hashes.manifest).leaf_hashes == hashes.leaf_hashes


def test_temporaries_a_crash_left_are_removed_on_open(tmp_path: Path) -> None:
    _store(tmp_path)
    (tmp_path / "images" / ".tmp-0123").write_bytes(b"half an image")
    (tmp_path / "manifests" / ".tmp-4567").write_bytes(b"half a manifest")
    reopened = _store(tmp_path)
    assert reopened.temporaries_removed == 2
    assert list(tmp_path.rglob(".tmp-*")) == []


def test_gc_keep_and_expired(tmp_path: Path) -> None:
    store = _store(tmp_path)
    images = [store.add_image([bytes([n]) * 200], LEAF).manifest for n in range(3)]
    old = store.add_manifest(stand_in_manifest(images[0], sequence=1, expires=100.0))
    middle = store.add_manifest(stand_in_manifest(images[1], sequence=2, expires=500.0))
    newest = store.add_manifest(stand_in_manifest(images[2], sequence=3, expires=50.0))
    orphan = store.add_image([b"orphan" * 30], LEAF).manifest
    planned = store.gc(keep=None, dry_run=True)
    assert planned.images == [orphan.object_id] and planned.manifests == []
    assert store.has_image(orphan.object_id)
    report = store.gc(expired_before=200.0)
    # The expired older version goes; the newest stays though expired (it is the latest).
    assert report.manifests == [old]
    assert set(report.images) == {orphan.object_id, images[0].object_id}
    assert set(store.manifests()) == {middle, newest}
    report = store.gc(keep=1)
    assert report.manifests == [middle] and report.images == [images[1].object_id]
    assert report.bytes_freed > 200
    assert store.check() == []
    assert store.latest("class-a") == newest


def test_the_current_trust_root_and_its_predecessors_stay(tmp_path: Path) -> None:
    store = _store(tmp_path)
    assert store.trust_root() is None
    first = store.set_trust_root(b"trust root 1")
    second = store.set_trust_root(b"trust root 2")
    assert store.trust_root() == b"trust root 2"
    assert store.trust_root_digest() == second
    store.gc()
    assert _store(tmp_path).read_object("trust-roots", first) == b"trust root 1"


def test_the_block_store_serves_stored_images_read_only(tmp_path: Path) -> None:
    store = _store(tmp_path)
    data = random.Random(5).randbytes(777)
    image = store.add_image([data], LEAF).manifest
    blocks = ImageBlockStore(store)
    assert blocks.open(image).covers(0, image.leaf_count)
    assert blocks.read(image.object_id, 64, 128) == data[64:192]
    assert blocks.read(image.object_id, 700, 128) == data[700:]
    with pytest.raises(OSError, match="read-only"):
        blocks.write_verified(image.object_id, 0, b"x" * 64)
    blocks.close()


def test_a_copy_of_a_store_is_a_store(tmp_path: Path) -> None:
    store = _store(tmp_path / "origin")
    image = store.add_image([b"copied" * 100], LEAF).manifest
    digest = store.add_manifest(stand_in_manifest(image))
    store.set_trust_root(b"root")
    shutil.copytree(tmp_path / "origin", tmp_path / "replica")
    replica = _store(tmp_path / "replica")
    assert set(replica.manifests()) == {digest}
    assert replica.trust_root() == b"root"
    assert replica.check() == []
    assert replica.hashes(image).manifest == image
