"""Talking to the Version service: a device's :meth:`VersionClient.report`
(retried until acknowledged), a client's queries (streamed a page at a time),
and :meth:`VersionClient.changes` (a class's changes as they happen).

    client = VersionClient(node, service_address, identity=VERSION_SERVICE_ID)
    changed = await client.report(report)
    async for device in client.devices(QueryFilter(device_class="sensor", not_version="2.0")):
        ...

``devices`` and ``pages`` stream with the ``rows`` method (a page of up to
512 devices as one byte string of columns, :mod:`dofpy_services.version.page`);
``page`` is one page of the older ``query`` method (typed records, 128 at most).
A service older than ``rows`` answers it NO_SUCH_ITEM: the client then streams
by ``query`` pages instead (the same devices, in the same order), and keeps
doing so for that service.
"""

from __future__ import annotations

import operator
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio

from dofpy._core import Address
from dofpy.errors import BadPacket, DofError
from dofpy.oap.errors import OapError, OapErrorCode, ProviderException
from dofpy.trio import DofNode, PendingAnswer
from dofpy.wire.oid import OID, decode_oid_untrusted
from dofpy_services.version.interface import (
    MAX_PAGE,
    VERSION_CHANGES,
    VERSION_OBJECT,
    VERSION_QUERY,
    VERSION_REPORT,
    DeviceChange,
    DeviceRecord,
    HistoryEntry,
    QueryFilter,
    VersionCount,
    VersionReport,
)
from dofpy_services.version.page import (
    MAX_ROWS,
    DevicePage,
    LoadedPage,
    load_device_page_untrusted,
)

__all__ = ["ReportNotStored", "VersionClient"]


class ReportNotStored(DofError):
    """Every attempt to report failed before an acknowledgement: the report
    may or may not be stored; send it again later."""


class VersionClient:
    """The Version service at ``peer`` (its node's identity ``identity``, when
    given, is the only one that may answer: trust by identity)."""

    def __init__(
        self,
        node: DofNode,
        peer: Address,
        *,
        identity: OID | None = None,
        object_id: OID = VERSION_OBJECT,
    ) -> None:
        self._node = node
        self._peer = peer
        self._identity = identity
        self._object = object_id
        self.rows_supported: bool | None = None
        """Whether the service answers ``rows``: unknown (``None``) until a
        stream asked; ``False`` once it answered NO_SUCH_ITEM (a service
        older than ``rows``), and :meth:`pages` then uses ``query``."""

    async def report(
        self,
        report: VersionReport,
        *,
        attempts: int = 8,
        max_backoff: float = 30.0,
        rng: random.Random | None = None,
    ) -> bool:
        """Report ``report`` until the service acknowledges it; whether it
        changed the device's version or boot state. Retries (with capped,
        jittered exponential back-off) while the service answers
        ``NotStored`` or BUSY or the request times out; raises
        :class:`ReportNotStored` after ``attempts``, and the service's
        ``Refused`` (a ProviderException) at once."""
        jitter = rng if rng is not None else random.Random()
        delay = 0.25
        last: Exception | None = None
        for _ in range(attempts):
            try:
                (changed,) = await self._node.invoke(
                    self._peer,
                    self._object,
                    VERSION_REPORT,
                    "report",
                    report,
                    identity=self._identity,
                )
                return bool(changed)
            except ProviderException as exc:
                if exc.definition.name != "NotStored":
                    raise
                last = exc
                # The service's retry_after, within max_backoff: an answer of
                # a year or infinity must not park the caller.
                delay = min(max(delay, float(exc.values[0])), max_backoff)
            except OapError as exc:
                if exc.error_code is not OapErrorCode.BUSY:
                    raise
                last = exc
            except TimeoutError as exc:  # DofTimeoutError: no answer at all
                last = exc
            await trio.sleep(delay * (0.5 + jitter.random()))
            delay = min(delay * 2, max_backoff)
        raise ReportNotStored(f"report not acknowledged after {attempts} attempts: {last}")

    async def page(
        self, query: QueryFilter, after: bytes = b"", limit: int = MAX_PAGE
    ) -> tuple[tuple[DeviceRecord, ...], bool]:
        """One page of ``query``: devices after the identity ``after`` (its
        DOF encoding), and whether more may follow."""
        devices, more = await self._invoke("query", query, after, limit)
        return devices, more

    async def rows(
        self, query: QueryFilter, after: bytes = b"", limit: int = MAX_ROWS
    ) -> tuple[DevicePage, bool]:
        """One page of ``query`` by the ``rows`` method: up to ``limit``
        devices after the identity ``after`` (its DOF encoding), checked, and
        whether more may follow. A page that does not decode, holds more than
        ``limit`` devices or does not follow ``after`` is an OAP
        INVALID_VALUE error."""
        encoded, more = await self._invoke("rows", query, after, limit)
        page = _checked_rows(_loaded_rows(encoded), after, limit)
        return page, bool(more)

    async def pages(
        self, query: QueryFilter, *, page_size: int = MAX_ROWS
    ) -> AsyncIterator[DevicePage]:
        """Every device ``query`` matches, in identity order, a page at a
        time (``page.records()`` are its devices): one page in memory,
        however many devices match. By ``rows``; from a service older than
        ``rows``, by ``query`` (pages of at most :data:`MAX_PAGE`).

        By ``rows``, the request for the next page is sent as soon as this
        page's cursor is known (its CBOR loaded), before the page is checked
        and consumed: the service reads it meanwhile. That request is
        abandoned whenever the stream ends early (closed, or an error)."""
        after = b""
        ahead: PendingAnswer | None = None  # the rows request of the page after ``after``
        try:
            while True:
                if self.rows_supported is not False:
                    answer = (
                        ahead if ahead is not None else self._start("rows", query, after, page_size)
                    )
                    ahead = None
                    try:
                        encoded, more = await answer.result()
                    except OapError as exc:
                        if exc.error_code is not OapErrorCode.NO_SUCH_ITEM:
                            raise
                        self.rows_supported = False
                        continue  # the same page, by query
                    self.rows_supported = True
                    loaded = _loaded_rows(encoded)
                    cursor = loaded.last_key
                    if more and cursor is not None:
                        ahead = self._start("rows", query, cursor, page_size)
                    page = _checked_rows(loaded, after, page_size)
                    if ahead is not None and page.keys[-1] != cursor:
                        # (the checked page's last key is the one loaded: never)
                        raise OapError(OapErrorCode.INVALID_VALUE, "rows answered two cursors")
                    more = bool(more)
                else:
                    page, more = await self._records_page(query, after, min(page_size, MAX_PAGE))
                if len(page):
                    yield page
                if not more or not len(page):
                    return
                after = page.keys[-1]
        finally:
            if ahead is not None:
                ahead.cancel()

    async def _records_page(
        self, query: QueryFilter, after: bytes, limit: int
    ) -> tuple[DevicePage, bool]:
        devices, more = await self.page(query, after, limit)
        page = DevicePage.of_records(devices)
        # The stream's cursor is the last identity: it must move on here too.
        _check_follows(page, after, limit, "query")
        return page, bool(more)

    async def devices(
        self, query: QueryFilter, *, page_size: int = MAX_ROWS
    ) -> AsyncIterator[DeviceRecord]:
        """Every device ``query`` matches, in identity order, fetched a page
        at a time (:meth:`pages`): one page in memory, however many devices
        match."""
        async for page in self.pages(query, page_size=page_size):
            for device in page.records():
                yield device

    async def count(self, query: QueryFilter) -> int:
        (devices,) = await self._invoke("count", query)
        result: int = devices
        return result

    async def histogram(self, device_class: str) -> tuple[VersionCount, ...]:
        (versions,) = await self._invoke("histogram", device_class)
        return tuple(versions)

    async def classes(self) -> tuple[str, ...]:
        (classes,) = await self._invoke("classes")
        return tuple(str(c) for c in classes)

    async def show(
        self, identity: OID, history_limit: int = 100
    ) -> tuple[DeviceRecord | None, tuple[HistoryEntry, ...]]:
        """A device and its latest ``history_limit`` changes (oldest first);
        ``(None, ())`` for a device never seen."""
        device, history = await self._invoke("show", identity.encode(), history_limit)
        return (device[0] if device else None), tuple(history)

    async def watch(self, device_class: str) -> OID:
        """The object whose ``changes`` carry ``device_class``'s changes."""
        (encoded,) = await self._invoke("watch", device_class)
        try:
            return decode_oid_untrusted(encoded)
        except DofError as exc:
            raise OapError(OapErrorCode.INVALID_VALUE, f"watch answered no object: {exc}") from None

    @asynccontextmanager
    async def changes(self, device_class: str) -> AsyncIterator[AsyncIterator[DeviceChange]]:
        """``async with client.changes("sensor") as changes: async for change
        in changes:`` -- each version or boot-state change of a device of the
        class committed at this service instance from now on. Notifications
        are datagrams: one may be lost (the subscription counts what it
        missed); re-query with ``last_seen_after`` to catch up."""
        oid = await self.watch(device_class)
        async with self._node.subscribe(
            self._peer, oid, VERSION_CHANGES, "changes", identity=self._identity
        ) as subscription:

            async def each() -> AsyncIterator[DeviceChange]:
                async for notification in subscription:
                    for change in notification.values[0]:
                        yield change

            yield each()

    async def _invoke(self, method: str, *args: object) -> tuple[Any, ...]:
        return await self._node.invoke(
            self._peer, self._object, VERSION_QUERY, method, *args, identity=self._identity
        )

    def _start(self, method: str, *args: object) -> PendingAnswer:
        return self._node.start_invoke(
            self._peer, self._object, VERSION_QUERY, method, *args, identity=self._identity
        )


def _loaded_rows(encoded: bytes) -> LoadedPage:
    try:
        return load_device_page_untrusted(encoded)
    except BadPacket as exc:
        raise OapError(OapErrorCode.INVALID_VALUE, f"rows answered {exc}") from None


def _checked_rows(loaded: LoadedPage, after: bytes, limit: int) -> DevicePage:
    try:
        page = loaded.check()
    except BadPacket as exc:
        raise OapError(OapErrorCode.INVALID_VALUE, f"rows answered {exc}") from None
    _check_follows(page, after, limit, "rows")
    return page


def _check_follows(page: DevicePage, after: bytes, limit: int, method: str) -> None:
    """Refuse a page that would not move a stream's cursor on (it would
    never end) or holds more than was asked."""
    keys = page.keys
    if len(keys) > limit or (keys and keys[0] <= after):
        raise OapError(OapErrorCode.INVALID_VALUE, f"{method} answered a page not after the cursor")
    if method != "rows" and not all(map(operator.lt, keys, keys[1:])):
        # (a rows page's decoder checked its order already)
        raise OapError(OapErrorCode.INVALID_VALUE, f"{method} answered devices out of order")
