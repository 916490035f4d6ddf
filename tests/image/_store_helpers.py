"""A stand-in manifest format for the store's own tests (the store reads
manifests only through the ``describe`` it is given), and an ``os`` that is
cut at a chosen call."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cbor2

from dofpy.errors import BadPacket
from dofpy.transfer.manifest import Manifest
from dofpy_services.image.store import ManifestSummary


def stand_in_manifest(
    image: Manifest,
    *,
    class_id: str = "class-a",
    sequence: int = 1,
    version: str | None = None,
    expires: float | None = None,
    references: tuple[bytes, ...] = (),
) -> bytes:
    return cbor2.dumps(
        {
            "class": class_id,
            "sequence": sequence,
            "version": version or f"1.{sequence}",
            "image": image.to_cbor_map(),
            "expires": expires,
            "references": list(references),
        }
    )


def describe_test_manifest(data: bytes) -> ManifestSummary:
    try:
        value = cbor2.loads(data)
        return ManifestSummary(
            vendor_id="vendor",
            class_id=value["class"],
            version=value["version"],
            sequence=value["sequence"],
            image=Manifest.from_cbor_map(value["image"]),
            expires=value["expires"],
            signers=("test",),
            references=tuple(value["references"]),
        )
    except (cbor2.CBORDecodeError, KeyError, TypeError) as exc:
        raise BadPacket(f"test manifest: {exc}") from None


class Crash(Exception):
    """The process stops here."""


@dataclass
class CuttableOs:
    """``os``, every call counted; from call ``crash_at`` on, every call raises
    (``Crash`` once, then ``Crash`` again: the process is dead). With
    ``fail_once`` only call ``crash_at`` fails, with an ``OSError`` (a full
    disk, an I/O error), and the process goes on."""

    crash_at: int | None = None
    fail_once: bool = False
    steps: int = 0
    dead: bool = False
    open_fds: set[int] = field(default_factory=set)

    def __getattr__(self, name: str) -> Any:
        real = getattr(os, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            if self.dead:
                raise Crash("dead")
            if self.crash_at is not None and self.steps == self.crash_at:
                self.steps += 1
                if self.fail_once:
                    if name == "close":  # Linux frees the descriptor even then
                        os.close(args[0])
                        self.open_fds.discard(args[0])
                    raise OSError(5, f"injected failure of {name}")
                self.dead = True
                raise Crash(name)
            self.steps += 1
            result = real(*args, **kwargs)
            if name == "open":
                self.open_fds.add(result)
            elif name == "close":
                self.open_fds.discard(args[0])
            return result

        return call

    def abandon(self) -> None:
        """What the kernel does for a dead process: close its descriptors (and
        so release its lock)."""
        for fd in self.open_fds:
            os.close(fd)
        self.open_fds.clear()


@dataclass
class _Inode:
    content: bytearray = field(default_factory=bytearray)
    durable: bytes | None = None  # the content at its last fsync (None: never)
    mode: int = 0o600


class PowerCutOs(CuttableOs):
    """A :class:`CuttableOs` that also models what a power cut keeps, for the
    files under ``root``: each file's content as of its last ``fsync``, under
    the names (and with the modes) its directory had at that directory's last
    ``fsync``. :meth:`power_cut` then rewrites the tree to just that."""

    def __init__(self, root: Path, crash_at: int | None = None) -> None:
        super().__init__(crash_at=crash_at)
        self.root = root
        self._live: dict[Path, dict[str, _Inode]] = {}
        self._durable: dict[Path, dict[str, _Inode]] = {}
        self._fd_inode: dict[int, _Inode | Path] = {}
        for directory in [root, *(p for p in root.rglob("*") if p.is_dir())]:
            names = {}
            for path in directory.iterdir():
                if path.is_file():
                    data = path.read_bytes()
                    names[path.name] = _Inode(bytearray(data), data, path.stat().st_mode & 0o777)
            self._live[directory] = names
            self._durable[directory] = dict(names)

    def __getattr__(self, name: str) -> Any:
        call = super().__getattr__(name)
        model = getattr(self, f"_model_{name}", None)
        if model is None:
            return call

        def modelled(*args: Any, **kwargs: Any) -> Any:
            result = call(*args, **kwargs)  # raises at the cut: nothing modelled
            model(result, *args)
            return result

        return modelled

    def _model_open(self, fd: int, path: Any, flags: int, mode: int = 0o777) -> None:
        path = Path(path)
        if path.is_dir():
            self._fd_inode[fd] = path
            return
        names = self._live.setdefault(path.parent, {})
        inode = names.get(path.name)
        if inode is None:
            inode = names[path.name] = _Inode(mode=mode & 0o777)
        self._fd_inode[fd] = inode

    def _model_write(self, written: int, fd: int, data: Any) -> None:
        inode = self._fd_inode[fd]
        assert isinstance(inode, _Inode)
        inode.content += bytes(memoryview(data)[:written])

    def _model_fsync(self, _: None, fd: int) -> None:
        target = self._fd_inode[fd]
        if isinstance(target, Path):
            self._durable[target] = dict(self._live.get(target, {}))
        else:
            target.durable = bytes(target.content)

    def _model_fchmod(self, _: None, fd: int, mode: int) -> None:
        inode = self._fd_inode[fd]
        assert isinstance(inode, _Inode)
        inode.mode = mode

    def _model_close(self, _: None, fd: int) -> None:
        self._fd_inode.pop(fd, None)

    def _model_replace(self, _: None, source: Any, target: Any) -> None:
        source, target = Path(source), Path(target)
        inode = self._live[source.parent].pop(source.name)
        self._live.setdefault(target.parent, {})[target.name] = inode

    def _model_unlink(self, _: None, path: Any) -> None:
        path = Path(path)
        self._live[path.parent].pop(path.name, None)

    def power_cut(self) -> None:
        """Leave under ``root`` only what was durable."""
        self.abandon()
        for directory, durable in self._durable.items():
            if not directory.is_dir():
                continue
            for path in directory.iterdir():
                if path.is_file():
                    path.unlink()
            for name, inode in durable.items():
                path = directory / name
                path.write_bytes(inode.durable or b"")
                path.chmod(inode.mode)
