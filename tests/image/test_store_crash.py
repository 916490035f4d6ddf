"""The image store under a crash at every operating-system call of a publish
and of a gc, and under a failure (an ``OSError``) at each: afterwards the store
opens clean (no temporary file left), is never half-written (every object
hashes to its name, every manifest's image is there and matches it) and holds
either the state before or the state after."""

from __future__ import annotations

import contextlib
import random
from pathlib import Path

import pytest

from dofpy_services.image.store import ImageStore
from tests.image._store_helpers import (
    Crash,
    CuttableOs,
    PowerCutOs,
    describe_test_manifest,
    stand_in_manifest,
)

LEAF = 64
OLD = random.Random(1).randbytes(5 * LEAF + 3)
NEW = random.Random(2).randbytes(9 * LEAF - 7)
RECORD = b"a key record the new manifest references"


def _open(root: Path, fs: object | None = None) -> ImageStore:
    if fs is None:
        return ImageStore(root, describe_test_manifest, chunk_bytes=100)
    return ImageStore(root, describe_test_manifest, fs=fs, chunk_bytes=100)


def _publish(store: ImageStore, data: bytes, sequence: int, record: bytes | None = None) -> bytes:
    pieces = [data[i : i + 100] for i in range(0, len(data), 100)]
    image = store.add_image(pieces, LEAF).manifest
    references: tuple[bytes, ...] = ()
    if record is not None:
        references = (store.add_record(record),)
    return store.add_manifest(stand_in_manifest(image, sequence=sequence, references=references))


def _leftovers(root: Path) -> list[str]:
    return [str(p.relative_to(root)) for p in root.rglob(".tmp-*")]


def _steps_of(action: object) -> int:
    fs = CuttableOs()
    action(fs)  # type: ignore[operator]
    return fs.steps


def _seeded(root: Path) -> bytes:
    store = _open(root)
    return _publish(store, OLD, 1)


def _publish_new(root: Path, fs: CuttableOs) -> None:
    store = _open(root, fs)
    _publish(store, NEW, 2, RECORD)


def _expected_new(tmp_path: Path) -> bytes:
    other = tmp_path / "reference"
    _seeded(other)
    return _publish(_open(other), NEW, 2, RECORD)


def test_a_crash_at_every_step_of_a_publish_leaves_the_old_or_the_new_state(
    tmp_path: Path,
) -> None:
    new_digest = _expected_new(tmp_path)
    probe = tmp_path / "probe"
    _seeded(probe)
    total = _steps_of(lambda fs: _publish_new(probe, fs))
    assert total > 30  # mkdirs, listings, lock, writes, fsyncs, renames...
    outcomes = set()
    for step in range(total):
        root = tmp_path / f"crash-{step}"
        old_digest = _seeded(root)
        fs = CuttableOs(crash_at=step)
        with pytest.raises(Crash):
            _publish_new(root, fs)
        fs.abandon()
        reopened = _open(root)
        assert _leftovers(root) == [], step
        assert reopened.check() == [], step
        published = set(reopened.manifests())
        assert published in ({old_digest}, {old_digest, new_digest}), step
        outcomes.add(len(published))
        # What a crashed publish left unreferenced, gc removes; the rest stays sound.
        reopened.gc()
        assert reopened.check() == []
        kept_images = {p.name for p in (root / "images").iterdir() if "." not in p.name}
        assert kept_images == {s.image.object_id.hex() for s in reopened.manifests().values()}
        assert {p.name for p in (root / "records").iterdir()} == (
            {bytes(r).hex() for s in reopened.manifests().values() for r in s.references}
        )
    assert outcomes == {1, 2}  # some cuts came before the commit, some after


def test_a_failed_call_at_every_step_of_a_publish_leaves_no_trace_and_a_retry_works(
    tmp_path: Path,
) -> None:
    new_digest = _expected_new(tmp_path)
    probe = tmp_path / "probe"
    _seeded(probe)
    total = _steps_of(lambda fs: _publish_new(probe, fs))
    for step in range(total):
        root = tmp_path / f"fail-{step}"
        old_digest = _seeded(root)
        fs = CuttableOs(crash_at=step, fail_once=True)
        with contextlib.suppress(OSError):
            _publish_new(root, fs)
        assert fs.open_fds == set(), step  # every descriptor closed, the lock released
        store = _open(root)
        assert store.check() == [], step
        assert store.temporaries_removed <= 1, step  # at most the one whose unlink failed
        assert set(store.manifests()) <= {old_digest, new_digest}
        _publish(store, NEW, 2, RECORD)
        assert set(store.manifests()) == {old_digest, new_digest}
        assert store.check() == []


def _gc_seeded(root: Path) -> tuple[bytes, list[bytes]]:
    """Three versions of a class (the newest shares its image with the oldest)
    and an image no manifest references (a crashed publish)."""
    store = _open(root)
    digests = [_publish(store, OLD, 1, b"record 1"), _publish(store, NEW, 2, b"record 2")]
    digests.append(_publish(store, OLD, 3))
    store.add_image([b"x" * 500], LEAF)
    return digests[2], digests


def test_a_crash_at_every_step_of_a_gc_leaves_every_manifest_whole(tmp_path: Path) -> None:
    probe = tmp_path / "probe"
    _gc_seeded(probe)
    total = _steps_of(lambda fs: _open(probe, fs).gc(keep=1))
    assert total > 20
    for step in range(total):
        root = tmp_path / f"gc-{step}"
        newest, all_digests = _gc_seeded(root)
        fs = CuttableOs(crash_at=step)
        with pytest.raises(Crash):
            _open(root, fs).gc(keep=1)
        fs.abandon()
        store = _open(root)
        assert _leftovers(root) == [], step
        assert store.check() == [], step
        assert newest in store.manifests()
        assert set(store.manifests()) <= set(all_digests)
        assert store.latest("class-a") == newest
        store.gc(keep=1)  # run again to the end: only the newest and what it needs
        assert set(store.manifests()) == {newest}
        assert store.check() == []
        assert len([p for p in (root / "images").iterdir() if "." not in p.name]) == 1
        assert list((root / "records").iterdir()) == []


def test_a_power_cut_at_every_step_of_a_publish_keeps_only_whole_objects(tmp_path: Path) -> None:
    new_digest = _expected_new(tmp_path)
    probe = tmp_path / "probe"
    _seeded(probe)
    total = _steps_of(lambda fs: _publish_new(probe, fs))
    outcomes = set()
    for step in range(total + 1):  # and after the last step: all of it durable
        root = tmp_path / f"cut-{step}"
        old_digest = _seeded(root)
        fs = PowerCutOs(root, crash_at=step)
        with contextlib.suppress(Crash):
            _publish_new(root, fs)
        fs.power_cut()
        store = _open(root)
        assert store.check() == [], step
        published = set(store.manifests())
        assert published in ({old_digest}, {old_digest, new_digest}), step
        outcomes.add(len(published))
    assert outcomes == {1, 2}
    assert len(published) == 2  # a publish that returned is durable


def test_a_power_cut_at_every_step_of_a_gc_keeps_every_manifest_whole(tmp_path: Path) -> None:
    probe = tmp_path / "probe"
    _gc_seeded(probe)
    total = _steps_of(lambda fs: _open(probe, fs).gc(keep=1))
    for step in range(total + 1):
        root = tmp_path / f"gc-cut-{step}"
        newest, all_digests = _gc_seeded(root)
        fs = PowerCutOs(root, crash_at=step)
        with contextlib.suppress(Crash):
            _open(root, fs).gc(keep=1)
        fs.power_cut()
        store = _open(root)
        assert store.check() == [], step
        assert newest in store.manifests() and set(store.manifests()) <= set(all_digests)
    assert set(store.manifests()) == {newest}  # a gc that returned is durable
