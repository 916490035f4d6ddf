"""Fuzz target: the block transfer's state machines (provider senders,
pacing, retries, address tokens; the requestor's receiver, window, Merkle
verification and resume) fed arbitrary *sequences* of datagrams with time
passing.

A seed is a whole recorded transfer: what the requestor sent (``to`` 0, fed
to the provider) and what the provider sent (``to`` 1, fed to the
requestor). Both are rebuilt identically for every input (fixed address-token
key, seeded jitter), so the seed replays to a completed transfer and a
mutation changes, drops, repeats or reorders one datagram of it. Nothing may
raise, and the requestor may complete only with the object's exact bytes:
whatever the sequence, a wrong byte is never reported verified.
"""

from __future__ import annotations

import random

from dofpy.transfer.core import TransferCore
from dofpy.transfer.events import TransferCompleted, TransferConfig
from dofpy.transfer.manifest import ObjectHashes
from dofpy.transfer.store import MemoryStore
from fuzz.targets._sequence import decode_sequence, encode_sequence

_PROVIDER_ADDR = ("192.0.2.1", 3567)
_REQUESTOR_ADDR = ("192.0.2.2", 40000)
_OBJECT = bytes(random.Random(7).randbytes(5 * 256 + 100))
_HASHES = ObjectHashes.build(_OBJECT, 256)
_MANIFEST = _HASHES.manifest


def _provider() -> TransferCore:
    provider = TransferCore(TransferConfig(address_token_key=bytes(32)), rng=random.Random(1))
    provider.publish(_OBJECT, 256)
    return provider


def _requestor() -> tuple[TransferCore, MemoryStore]:
    store = MemoryStore()
    requestor = TransferCore(rng=random.Random(2))
    requestor.fetch(_MANIFEST, [_PROVIDER_ADDR], 0.0, store=store)
    return requestor, store


def _recorded_transfer(loss_seed: int | None) -> bytes:
    """A transfer run to its end (with every fourth-or-so datagram lost when
    ``loss_seed`` is given, so retries and timers are in the seed too)."""
    provider, (requestor, _store) = _provider(), _requestor()
    loss = random.Random(loss_seed)
    sent: list[tuple[int, bytes, int]] = []
    now = 0.0
    for _ in range(200):
        moved = False
        for data, _to in requestor.datagrams_to_send(now):
            moved = True
            if loss_seed is None or loss.random() > 0.25:
                sent.append((0, data, 0))
                provider.receive_datagram(data, _REQUESTOR_ADDR, now)
        for data, _to in provider.datagrams_to_send(now):
            moved = True
            if loss_seed is None or loss.random() > 0.25:
                sent.append((1, data, 0))
                requestor.receive_datagram(data, _PROVIDER_ADDR, now)
        if isinstance(requestor.next_event(), TransferCompleted):
            break
        if not moved:
            timers = [t for t in (requestor.get_timer(), provider.get_timer()) if t is not None]
            step = max(min(timers) - now, 0.1) if timers else 0.1
            if sent:
                last_to, last_data, _ = sent[-1]
                sent[-1] = (last_to, last_data, min(round(step * 10) + 1, 255))
            now += step
            requestor.handle_timer(now)
            provider.handle_timer(now)
    else:
        raise AssertionError("the recorded transfer did not complete")
    return encode_sequence(sent)


SEEDS: tuple[bytes, ...] = (_recorded_transfer(None), _recorded_transfer(3))


def target(data: bytes) -> None:
    """Replay ``data`` into a fresh provider and requestor."""
    replay(data)


def replay(data: bytes) -> bool:
    """Replay ``data``; whether the requestor completed (with the right bytes)."""
    completed = False
    provider, (requestor, store) = _provider(), _requestor()
    now = 0.0
    for to, datagram, step in decode_sequence(data):
        if to & 1:
            requestor.receive_datagram(datagram, _PROVIDER_ADDR, now)
        else:
            provider.receive_datagram(datagram, _REQUESTOR_ADDR, now)
        requestor.datagrams_to_send(now)
        provider.datagrams_to_send(now)
        now += step
        for core in (requestor, provider):
            timer = core.get_timer()
            if timer is not None and timer <= now:
                core.handle_timer(now)
        while (event := requestor.next_event()) is not None:
            if isinstance(event, TransferCompleted):
                if store.read(_MANIFEST.object_id, 0, len(_OBJECT)) != _OBJECT:
                    raise AssertionError("a transfer completed with bytes that are not the object")
                completed = True
        while provider.next_event() is not None:
            pass
    return completed
