"""A stand-in manifest format for the store's own tests (the store reads
manifests only through the ``describe`` it is given), and an ``os`` that is
cut at a chosen call."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
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
