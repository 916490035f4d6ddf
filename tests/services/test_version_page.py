"""A page of devices as one byte string of CBOR columns (the ``rows``
method): round trips (Hypothesis) against the records the ``query`` method
makes of the same rows, what the decoder refuses, a page of the largest
devices within one sealed datagram over OAP, the client's checks of the
cursor, and a stream's request for its next page sent before this page is
checked (abandoned when the stream ends early)."""

from __future__ import annotations

import math
from contextlib import aclosing
from typing import Any

import cbor2
import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from dofpy.errors import BadPacket
from dofpy.oap.errors import OapError, OapErrorCode
from dofpy.oap.interface import Interface
from dofpy.trio import DofNode, PendingAnswer
from dofpy.wire.oid import OID
from dofpy_services.store import StoreUnavailable
from dofpy_services.version import VERSION_OBJECT, VERSION_QUERY, QueryFilter, VersionClient
from dofpy_services.version.daemon import (
    PagePrefetch,
    PageSizes,
    PrefetchStatistics,
    QueryProvider,
)
from dofpy_services.version.interface import MAX_PAGE
from dofpy_services.version.page import (
    COLUMNS,
    MAX_PAGE_BYTES,
    MAX_ROWS,
    decode_device_page_untrusted,
    encode_device_page,
    fit_device_page,
    load_device_page_untrusted,
)
from dofpy_services.version.store import PendingReport, device_record, write_reports
from tests.services.test_daemon_runner import WAIT
from tests.services.test_version import CLIENT_ID, serving
from tests.services.version_helpers import device, report

_floats = st.floats(allow_nan=False, width=64)
_int63 = st.integers(0, (1 << 63) - 1)


@st.composite
def device_rows(draw: st.DrawFn) -> list[tuple[Any, ...]]:
    """Rows as the ``devices`` table holds them, in identity order."""
    datas = draw(st.lists(st.binary(min_size=0, max_size=63), max_size=12, unique=True))
    classes = st.integers(1, 0x3FFF)
    keys = sorted({OID(draw(classes), data).encode() for data in datas})
    return [
        (
            key,
            draw(st.text(min_size=1, max_size=12)),
            draw(st.text(max_size=12)),
            draw(_int63),
            draw(st.binary(max_size=64)),
            draw(st.integers(0, 255)),
            draw(st.sampled_from(["normal", "reprogram"])),
            draw(st.integers(0, 1)),  # as the databases store it
            draw(st.integers(0, 0xFFFF_FFFF)),
            draw(_int63),
            draw(_floats),
            draw(_floats),
            draw(_floats),
            draw(_floats),
        )
        for key in keys
    ]


@settings(max_examples=150, deadline=None)
@given(device_rows())
def test_a_page_decodes_to_the_records_query_makes_of_the_same_rows(
    rows: list[tuple[Any, ...]],
) -> None:
    encoded = encode_device_page(rows)
    page = decode_device_page_untrusted(encoded)
    assert list(page.records()) == [device_record(row) for row in rows]
    assert page.keys == [row[0] for row in rows] and len(page) == len(rows)


@settings(max_examples=50, deadline=None)
@given(device_rows())
def test_a_page_of_a_driver_giving_memoryviews_is_the_page_of_bytes(
    rows: list[tuple[Any, ...]],
) -> None:
    # (psycopg2 and some adapters give byte columns as memoryview: converted,
    # the same page as of bytes; a column of bytes already is kept as it is.)
    viewed = [(memoryview(r[0]), *r[1:4], memoryview(r[4]), *r[5:]) for r in rows]
    assert encode_device_page(viewed) == encode_device_page(rows)
    assert fit_device_page(viewed) == fit_device_page(rows)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, MAX_ROWS), st.integers(0, 600), st.integers(0, 64))
def test_a_fitted_page_is_the_encoding_of_the_devices_it_holds(
    count: int, version_length: int, digest_length: int
) -> None:
    # Devices large enough that only some fit (a version up to 600 bytes:
    # more than VersionReport allows, to fill a page sooner).
    rows = [
        tuple(_row(n, version="v" * (version_length + n % 7), image_digest=b"d" * digest_length))
        for n in range(count)
    ]
    page, fitted = fit_device_page(rows)
    assert 1 <= fitted <= count
    assert page == encode_device_page(rows[:fitted])
    assert len(page) <= MAX_PAGE_BYTES or fitted == 1
    if fitted < count:  # as many as fit, give or take the estimate's rounding
        assert len(encode_device_page(rows[: fitted + 2])) > MAX_PAGE_BYTES * 0.98


def _row(number: int, **changes: Any) -> list[Any]:
    values = dict(
        zip(
            COLUMNS,
            (
                device(number).encode(),
                "sensor",
                "1.0",
                10,
                b"\x01" * 32,
                0,
                "normal",
                True,
                1,
                4096,
                1.5,
                100.0,
                200.0,
                150.0,
            ),
            strict=True,
        )
    )
    values.update(changes)
    return [values[name] for name in COLUMNS]


def _columns(rows: list[list[Any]]) -> list[Any]:
    return [list(column) for column in zip(*rows, strict=True)]


def test_the_page_is_the_canonical_encoding_of_its_columns() -> None:
    rows = [_row(1), _row(2)]
    encoded = encode_device_page([tuple(r) for r in rows])
    assert encoded == cbor2.dumps(_columns(rows), canonical=True)
    assert decode_device_page_untrusted(encoded).identities == (device(1), device(2))
    empty = decode_device_page_untrusted(encode_device_page([]))
    assert len(empty) == 0 and list(empty.records()) == []


@pytest.mark.parametrize(
    ("columns", "why"),
    [
        ([_row(2), _row(1)], "strictly increasing"),
        ([_row(1), _row(1)], "strictly increasing"),
        ([_row(1, sequence="10")], "sequence must be integers"),
        ([_row(1, sequence=True)], "sequence must be integers"),
        ([_row(1, slot=256)], "slot outside"),
        ([_row(1, boot_count=-1)], "boot_count outside"),
        ([_row(1, first_seen=100)], "first_seen must be floats"),
        ([_row(1, accepted=1)], "accepted must be booleans"),
        ([_row(1, image_kind="other")], "image_kind must be one of"),
        ([_row(1, version=b"1.0")], "version must be text"),
        ([_row(1, identity="device")], "identity must be byte strings"),
        ([_row(1, identity=b"\x03\x05ab")], "OID"),
        ([_row(1, identity=b"\x00\x01a")], "OID"),
        ([_row(1, identity=b"\x03\x45" + b"a" * 69)], "OID"),
    ],
)
def test_a_page_with_a_bad_value_is_refused(columns: list[list[Any]], why: str) -> None:
    with pytest.raises(BadPacket, match=why):
        decode_device_page_untrusted(cbor2.dumps(_columns(columns), canonical=True))


def test_a_page_out_of_shape_or_form_is_refused() -> None:
    good = _columns([_row(1)])
    # What each breaks -> what the refusal says.
    cases = {
        "canonical": cbor2.dumps(good),  # floats as 8 bytes where 2 or 4 hold them
        # cbor2 counts a tag as a level: the depth limit refuses it first.
        "nesting depth|tag": cbor2.dumps([*good[:3], [cbor2.CBORTag(2, b"\x01")], *good[4:]]),
        "nesting depth|tag ": cbor2.dumps([cbor2.CBORTag(258, good[0]), *good[1:]]),
        "one length": cbor2.dumps([*good[:-1], []], canonical=True),
        "array of 14 columns": cbor2.dumps(good[:-1], canonical=True),
        "every column must be an array": cbor2.dumps([*good[:-1], 1.0], canonical=True),
        "canonical|trailing|does not decode": cbor2.dumps(good, canonical=True) + b"\x00",
        "does not decode": cbor2.dumps(good, canonical=True)[:-3],
        "exceed": b"\x8e" + b"\x00" * MAX_PAGE_BYTES,
        "at most 512": cbor2.dumps(
            _columns([_row(n) for n in range(MAX_ROWS + 1)]), canonical=True
        ),
    }
    for why, data in cases.items():
        with pytest.raises(BadPacket, match=why):
            decode_device_page_untrusted(data)
    with pytest.raises(ValueError, match="at most"):
        encode_device_page([tuple(r) for r in [_row(n) for n in range(MAX_ROWS + 1)]])


def test_a_page_loaded_names_its_cursor_before_it_is_checked() -> None:
    rows = [_row(1), _row(2)]
    encoded = encode_device_page([tuple(r) for r in rows])
    loaded = load_device_page_untrusted(encoded)
    assert loaded.last_key == device(2).encode()
    assert loaded.check() == decode_device_page_untrusted(encoded)
    # Loading checks only what comes before cbor2: the rest is check()'s.
    not_canonical = load_device_page_untrusted(cbor2.dumps(_columns(rows)))
    assert not_canonical.last_key == device(2).encode()
    with pytest.raises(BadPacket, match="canonical"):
        not_canonical.check()
    # No cursor: an empty page, or one out of shape where the cursor is.
    assert load_device_page_untrusted(encode_device_page([])).last_key is None
    unnamed = [[*_columns(rows)[0][:1], "device"], *_columns(rows)[1:]]
    assert load_device_page_untrusted(cbor2.dumps(unnamed, canonical=True)).last_key is None
    with pytest.raises(BadPacket, match="does not decode"):
        load_device_page_untrusted(encoded[:-3])


async def test_a_page_of_the_largest_devices_fits_one_sealed_datagram(location: str) -> None:
    count = 300

    def identity(n: int) -> OID:
        return OID(3, f"{n:05d}".encode() + b"d" * 58)  # 63 data bytes, the most

    largest = report("c" * 48, "v" * 64, (1 << 63) - 1, boot_count=0xFFFF_FFFF)
    largest = type(largest)(
        largest.device_class,
        largest.version,
        largest.sequence,
        b"\xff" * 64,
        largest.boot,
        (1 << 63) - 1,
        math.pi,
    )
    async with serving(location) as service, service.client(CLIENT_ID) as client:
        pending = [PendingReport(identity(n), largest, math.e + n) for n in range(count)]
        await service.store.database.write(lambda tx: write_reports(tx, pending), kind="load")
        with trio.fail_after(WAIT):
            page, more = await client.rows(QueryFilter(), b"", MAX_ROWS)
            streamed = [d.identity async for d in client.devices(QueryFilter())]
    # Fewer than asked for, as many as fit, and the rest on later pages.
    assert 100 < len(page) < count and more
    assert streamed == [identity(n) for n in range(count)]
    first = next(page.records())
    assert (first.version, first.image_digest, first.device_clock) == (
        "v" * 64,
        b"\xff" * 64,
        math.pi,
    )


class _Answer:
    """A fake node's :class:`~dofpy.trio.PendingAnswer`: its ``invoke``
    called when the answer is awaited."""

    def __init__(self, node: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self._call = lambda: node.invoke(*args, **kwargs)

    async def result(self) -> tuple[Any, ...]:
        values: tuple[Any, ...] = await self._call()
        return values

    def cancel(self) -> None:
        pass


class _FakeNode:
    """``start_invoke`` by the fake's own ``invoke`` (its answers scripted)."""

    def start_invoke(self, *args: Any, **kwargs: Any) -> _Answer:
        return _Answer(self, args, kwargs)


class _AnsweringNode(_FakeNode):
    """A node whose every invoke answers ``values`` (a service misbehaving)."""

    def __init__(self, values: tuple[Any, ...]) -> None:
        self.values = values

    async def invoke(self, *args: Any, **kwargs: Any) -> tuple[Any, ...]:
        return self.values


@pytest.mark.parametrize(
    ("answer", "after", "limit"),
    [
        ((encode_device_page([tuple(_row(1))]), True), device(1).encode(), 10),  # not after
        ((encode_device_page([tuple(_row(1)), tuple(_row(2))]), True), b"", 1),  # too many
        ((b"\x80", False), b"", 10),  # no page
    ],
)
async def test_the_client_refuses_a_page_that_would_not_move_the_cursor_on(
    answer: tuple[Any, ...], after: bytes, limit: int
) -> None:
    client = VersionClient(_AnsweringNode(answer), ("127.0.0.1", 1))  # type: ignore[arg-type]
    with pytest.raises(OapError) as refused:
        await client.rows(QueryFilter(), after, limit)
    assert refused.value.error_code is OapErrorCode.INVALID_VALUE


async def test_a_stream_of_pages_ends_on_an_empty_page() -> None:
    client = VersionClient(_AnsweringNode((encode_device_page([]), True)), ("127.0.0.1", 1))  # type: ignore[arg-type]
    assert [page async for page in client.pages(QueryFilter())] == []


@pytest.fixture
def location(db_location: str) -> str:
    """Each test once on SQLite, once on PostgreSQL (tests/services/conftest.py)."""
    return db_location


class _CountingStore:
    """A store whose pages name their cursor; ``fail`` makes reads fail."""

    def __init__(self) -> None:
        self.reads: list[bytes] = []
        self.fail = False

    async def rows(
        self, query: QueryFilter, after: bytes, limit: int, *, read: int | None = None
    ) -> tuple[bytes, bool, bytes, int]:
        self.reads.append(after)
        await trio.sleep(0.01)
        if self.fail:
            raise StoreUnavailable("down")
        return b"page " + after, True, after + b"+", 1


async def test_a_prefetched_page_is_used_once_while_fresh_and_few_are_held(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = _CountingStore()
    query = QueryFilter()
    async with trio.open_nursery() as nursery:
        prefetch = PagePrefetch(  # one page ahead: chained reads are the next test's
            store,
            nursery,
            max_pages=2,
            max_age=1.0,
            ahead=1,  # type: ignore[arg-type]
        )
        prefetch.start((query, b"a", 9))
        prefetch.start((query, b"a", 9))  # being read already: one read
        assert await prefetch.take((query, b"a", 9)) == (b"page a", True, b"a+", 1)
        assert await prefetch.take((query, b"a", 9)) is None  # once
        prefetch.start((query, b"b", 9))
        await trio.sleep(2.0)
        assert await prefetch.take((query, b"b", 9)) is None  # too old
        for after in (b"c", b"d", b"e"):
            prefetch.start((query, after, 9))
        assert await prefetch.take((query, b"e", 9)) is None  # two reads at once at most
        await trio.sleep(0.1)
        prefetch.start((query, b"g", 9))
        assert await prefetch.take((query, b"c", 9)) is None  # dropped: two held at most
        assert await prefetch.take((query, b"d", 9)) is not None
        assert await prefetch.take((query, b"g", 9)) is not None
        store.fail = True
        prefetch.start((query, b"f", 9))
        assert await prefetch.take((query, b"f", 9)) is None  # the request reads it itself
    assert sorted(store.reads) == [b"a", b"b", b"c", b"d", b"f", b"g"]  # "a" read once
    assert prefetch.used == 3
    # Six reads; "a" and "g" waited for, "d" was ready; "b" too old, "c"
    # dropped for "g", "f" failed.
    assert prefetch.statistics() == PrefetchStatistics(
        started=6, used=3, waited=2, expired=1, dropped=1, failed=1
    )


class _EndingStore(_CountingStore):
    """Pages whose cursor grows by "+" each page; the page after "a+++" is the last."""

    async def rows(
        self, query: QueryFilter, after: bytes, limit: int, *, read: int | None = None
    ) -> tuple[bytes, bool, bytes, int]:
        page, _, last, count = await super().rows(query, after, limit)
        return page, len(after) < len(b"a+++"), last, count


async def test_prefetched_reads_chain_up_to_ahead_pages_and_stop_at_the_end(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = _EndingStore()
    query = QueryFilter()
    async with trio.open_nursery() as nursery:
        prefetch = PagePrefetch(store, nursery, ahead=3, max_age=10.0)  # type: ignore[arg-type]
        prefetch.start((query, b"a", 9))
        await trio.sleep(1.0)
        # Each read started the next: three pages ahead, not four.
        assert store.reads == [b"a", b"a+", b"a++"]
        # The client takes "a" and the provider asks for what follows it: the
        # reach moves on by one page, read once ("a+" and "a++" are not
        # read again).
        assert await prefetch.take((query, b"a", 9)) == (b"page a", True, b"a+", 1)
        prefetch.start((query, b"a+", 9))
        await trio.sleep(0.5)
        assert store.reads == [b"a", b"a+", b"a++", b"a+++"]
        for after in (b"a+", b"a++", b"a+++"):
            assert await prefetch.take((query, after, 9)) is not None
            prefetch.start((query, after + b"+", 9))
        await trio.sleep(0.5)
    # "a++++" was asked for by the provider after "a+++" (which said more):
    # read; the page after it said no more, so nothing followed it.
    assert store.reads == [b"a", b"a+", b"a++", b"a+++", b"a++++"]
    assert prefetch.statistics() == PrefetchStatistics(
        started=5, used=4, waited=0, expired=0, dropped=0, failed=0
    )


def test_prefetch_reads_at_least_the_next_page() -> None:
    with pytest.raises(ValueError, match="ahead"):
        PagePrefetch(_CountingStore(), None, ahead=0)  # type: ignore[arg-type]


def test_page_sizes_guess_what_fits_a_page_from_the_last_page_of_a_query() -> None:
    sizes = PageSizes(max_queries=2)
    sensors, gateways, others = (QueryFilter(device_class=c) for c in ("s", "g", "o"))
    assert sizes.read_for(sensors, 512) == 512  # nothing known: all asked for
    sizes.saw(sensors, 512, (b"x" * 59_000, True, b"k", 470))  # 125.5 bytes a device
    guess = sizes.read_for(sensors, 512)
    assert 478 <= guess <= 490  # 60,000 / 125.5 = 478, and a little more
    assert sizes.read_for(sensors, 400) == 400  # another limit: another stream, unknown
    sizes.saw(others, 512, (b"", False, b"", 0))  # an empty page teaches nothing
    assert sizes.read_for(others, 512) == 512
    sizes.saw(others, 100, (b"x" * 1_000, True, b"k", 100))  # small devices
    assert sizes.read_for(others, 100) == 100  # never more than the limit
    # Two queries kept: learning a third forgets the one learnt longest ago.
    sizes.saw(gateways, 512, (b"x" * 60_000, True, b"k", 100))  # 600 bytes a device
    assert sizes.read_for(gateways, 512) == 103
    assert sizes.read_for(sensors, 512) == 512
    assert sizes.read_for(others, 100) == 100


# The query interface as a service older than ``rows`` provides it: the same
# interface id, without item 8 (its OAP layer answers NO_SUCH_ITEM to it).
OLDER_QUERY = Interface.define(
    VERSION_QUERY.iid, VERSION_QUERY.name, [i for i in VERSION_QUERY.items if i.name != "rows"]
)


class _OlderQueries(QueryProvider):
    """The older service's queries: records pages only, counted."""

    def __init__(self, store: Any) -> None:
        super().__init__(store, None)
        self.pages: list[int] = []

    async def query(self, query: QueryFilter, after: bytes, limit: int) -> Any:
        self.pages.append(limit)
        return await super().query(query, after, limit)


async def test_a_client_streams_by_query_pages_from_a_service_older_than_rows(
    location: str,
) -> None:
    count = 300
    async with serving(location) as service, service.client(CLIENT_ID) as client:
        pending = [
            PendingReport(device(n), report(version=f"1.{n % 3}"), 100.0 + n) for n in range(count)
        ]
        await service.store.database.write(lambda tx: write_reports(tx, pending), kind="load")
        older = _OlderQueries(service.store)
        service.node.withdraw(VERSION_OBJECT, VERSION_QUERY)
        service.node.provide(VERSION_OBJECT, OLDER_QUERY, older)
        stored, _ = await service.store.page(QueryFilter(), b"", MAX_ROWS)
        stored += (await service.store.page(QueryFilter(), stored[-1].identity.encode(), 100))[0]
        with trio.fail_after(WAIT):
            with pytest.raises(OapError) as refused:
                await client.rows(QueryFilter(), b"", MAX_ROWS)
            streamed = [d async for d in client.devices(QueryFilter())]
            asked_first = len(older.pages)
            # Known now: the next stream asks ``query`` at once.
            again = [
                d.identity
                async for d in client.devices(QueryFilter(not_version="1.0"), page_size=50)
            ]
    assert refused.value.error_code is OapErrorCode.NO_SUCH_ITEM
    # Every device, once, in identity order, as the records the store holds.
    assert streamed == stored and len(streamed) == count
    assert client.rows_supported is False
    assert older.pages[:asked_first] == [MAX_PAGE, MAX_PAGE, MAX_PAGE]  # 128, 128, 44
    # 200 devices not running 1.0: four full pages, and a fifth finds none.
    assert older.pages[asked_first:] == [50] * 5
    assert again == [device(n) for n in range(count) if n % 3 != 0]


class _ScriptedQueries(_FakeNode):
    """A node answering ``rows`` NO_SUCH_ITEM and ``query`` from ``pages``."""

    def __init__(self, pages: list[tuple[tuple[Any, ...], bool]]) -> None:
        self.pages = pages
        self.methods: list[str] = []

    async def invoke(self, peer: Any, oid: Any, interface: Any, method: str, *args: Any, **_: Any):
        self.methods.append(method)
        if method == "rows":
            raise OapError(OapErrorCode.NO_SUCH_ITEM, "no item 8")
        return self.pages.pop(0)


def _record(number: int) -> Any:
    return device_record(tuple(_row(number)))


async def test_query_pages_that_would_not_move_the_cursor_on_are_refused_too() -> None:
    for answer in [
        [((_record(2), _record(1)), True)],  # out of order
        [((_record(1),), True), ((_record(1),), True)],  # repeats the cursor
    ]:
        node = _ScriptedQueries(answer)
        client = VersionClient(node, ("127.0.0.1", 1))  # type: ignore[arg-type]
        with pytest.raises(OapError) as refused:
            _ = [d async for d in client.devices(QueryFilter())]
        assert refused.value.error_code is OapErrorCode.INVALID_VALUE
        assert node.methods[0] == "rows" and set(node.methods[1:]) == {"query"}
    # Another refusal of ``rows`` is not taken for an older service.
    client = VersionClient(
        _AnsweringNode(()),  # type: ignore[arg-type]
        ("127.0.0.1", 1),
    )

    async def denied(*args: Any, **kwargs: Any) -> Any:
        raise OapError(OapErrorCode.PERMISSION_DENIED, "no")

    client._node.invoke = denied  # type: ignore[method-assign]
    with pytest.raises(OapError) as refused:
        _ = [d async for d in client.devices(QueryFilter())]
    assert refused.value.error_code is OapErrorCode.PERMISSION_DENIED
    assert client.rows_supported is None


class _Started:
    """``node.start_invoke``, each request it started kept."""

    def __init__(self, node: DofNode) -> None:
        self.node = node
        self.started: list[PendingAnswer] = []
        self._start = node.start_invoke

    def __call__(self, *args: Any, **kwargs: Any) -> PendingAnswer:
        pending = self._start(*args, **kwargs)
        self.started.append(pending)
        return pending

    @property
    def in_flight(self) -> int:
        return self.node.statistics().oap.node.pending_commands


def _started(client: VersionClient) -> _Started:
    started = _Started(client._node)
    client._node.start_invoke = started  # type: ignore[method-assign]
    return started


async def test_a_stream_asks_for_the_next_page_before_it_yields_this_one(location: str) -> None:
    count = 290
    async with serving(location) as service, service.client(CLIENT_ID) as client:
        pending = [PendingReport(device(n), report(), 100.0 + n) for n in range(count)]
        await service.store.database.write(lambda tx: write_reports(tx, pending), kind="load")
        started = _started(client)
        in_flight: list[int] = []
        with trio.fail_after(WAIT):
            streamed = []
            async for page in client.pages(QueryFilter(), page_size=50):
                in_flight.append(started.in_flight)  # the next page's request, sent already
                streamed.append(page)
            requests = len(started.started)
            # The same stream, a page at a time and no page asked for ahead.
            one_by_one = []
            after, more = b"", True
            while more:
                page, more = await client.rows(QueryFilter(), after, 50)
                one_by_one.append(page)
                after = page.keys[-1] if len(page) else after
    # Six pages (50 x 5, 40): the first five each yielded with the next in flight.
    assert in_flight == [1, 1, 1, 1, 1, 0]
    assert requests == 6
    assert [p.keys for p in streamed] == [p.keys for p in one_by_one]
    assert [list(p.records()) for p in streamed] == [list(p.records()) for p in one_by_one]
    identities = [i for page in streamed for i in page.identities]
    assert identities == [device(n) for n in range(count)]  # every device once, in order


async def test_a_stream_closed_early_leaves_no_request_pending(location: str) -> None:
    async with serving(location) as service, service.client(CLIENT_ID) as client:
        pending = [PendingReport(device(n), report(), 100.0 + n) for n in range(30)]
        await service.store.database.write(lambda tx: write_reports(tx, pending), kind="load")
        started = _started(client)
        with trio.fail_after(WAIT):
            async with aclosing(client.pages(QueryFilter(), page_size=8)) as pages:
                async for page in pages:
                    assert len(page) == 8 and started.in_flight == 1
                    break
            assert started.in_flight == 0  # the second page's request abandoned
            assert client._node._waiters == {}
            # The client's node goes on: another stream, to its end.
            assert len([d async for d in client.devices(QueryFilter(), page_size=8)]) == 30
    assert len(started.started) == 2 + 4 and started.started[1].done


class _NotCanonicalRows(QueryProvider):
    """Answers pages whose floats take 8 bytes (loaded fine, refused by the check)."""

    async def rows(self, query: QueryFilter, after: bytes, limit: int) -> tuple[bytes, bool]:
        page, more = await super().rows(query, after, limit)
        return cbor2.dumps(cbor2.loads(page)), more


async def test_a_page_refused_by_the_check_abandons_the_next_request(location: str) -> None:
    async with serving(location) as service, service.client(CLIENT_ID) as client:
        pending = [PendingReport(device(n), report(), 100.0 + n) for n in range(30)]
        await service.store.database.write(lambda tx: write_reports(tx, pending), kind="load")
        service.node.withdraw(VERSION_OBJECT, VERSION_QUERY)
        service.node.provide(VERSION_OBJECT, VERSION_QUERY, _NotCanonicalRows(service.store, None))
        started = _started(client)
        with trio.fail_after(WAIT), pytest.raises(OapError) as refused:
            _ = [page async for page in client.pages(QueryFilter(), page_size=8)]
        assert refused.value.error_code is OapErrorCode.INVALID_VALUE
        assert "canonical" in str(refused.value)
        # The second page was asked for (its cursor loaded), then abandoned.
        assert len(started.started) == 2 and started.started[1].done
        assert started.in_flight == 0 and client._node._waiters == {}
