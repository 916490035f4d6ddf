"""Errors leave ``open_node`` / ``open_transfer_node`` / ``open_udp_endpoint``
as themselves, not wrapped in trio's exception groups: ``except DofError``
around a node fires, as the README says."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

import pytest
import trio

from dofpy import DofError, DofTimeoutError, OapError
from dofpy.session.node import Node
from dofpy.testing.example import THERMOSTAT, THERMOSTAT_OID
from dofpy.trio import lone_exceptions_unwrapped, open_node, open_transfer_node
from dofpy.trio._endpoint import open_udp_endpoint

OpenAny = Callable[[], AbstractAsyncContextManager[object]]


def _node() -> AbstractAsyncContextManager[object]:
    return open_node()


def _transfer_node() -> AbstractAsyncContextManager[object]:
    return open_transfer_node()


def _endpoint() -> AbstractAsyncContextManager[object]:
    return open_udp_endpoint(Node())


OPENERS = pytest.mark.parametrize("opener", [_node, _transfer_node, _endpoint])


@OPENERS
async def test_a_plain_error_of_the_body_leaves_as_itself(opener: OpenAny) -> None:
    with pytest.raises(TypeError, match="the body's own") as raised:
        async with opener():
            raise TypeError("the body's own")
    assert not isinstance(raised.value, BaseExceptionGroup)
    # Its own traceback still reaches the line that raised it.
    assert raised.traceback[-1].name == "test_a_plain_error_of_the_body_leaves_as_itself"


@OPENERS
async def test_a_dof_error_of_the_body_is_caught_by_except_dof_error(opener: OpenAny) -> None:
    caught: list[BaseException] = []
    try:
        async with opener():
            raise DofTimeoutError("timed out in the body")
    except DofError as error:
        caught.append(error)
    assert [type(e) for e in caught] == [DofTimeoutError]


async def test_a_request_that_times_out_leaves_the_node_as_dof_timeout_error(
    autojump_clock: trio.abc.Clock,
) -> None:
    """A real failure of the node's own work: a Get to a silent peer."""
    async with open_node() as silent:
        address = silent.local_address
    with pytest.raises(DofTimeoutError):
        async with open_node() as node:
            await node.get(address, THERMOSTAT_OID, THERMOSTAT, "temperature")


async def test_a_refusal_leaves_the_node_as_oap_error() -> None:
    async with open_node() as provider:
        with pytest.raises(OapError):
            async with open_node() as node:
                with trio.fail_after(10):
                    peer = provider.local_address
                    await node.get(peer, THERMOSTAT_OID, THERMOSTAT, "temperature")


async def test_cancellation_is_not_turned_into_an_error() -> None:
    with trio.move_on_after(0) as scope:
        async with open_node():
            await trio.sleep_forever()
    assert scope.cancelled_caught


def test_several_real_failures_stay_a_group() -> None:
    with pytest.raises(ExceptionGroup) as raised, lone_exceptions_unwrapped():
        raise ExceptionGroup("two", [ValueError("a"), KeyError("b")])
    assert len(raised.value.exceptions) == 2


def test_nested_groups_of_one_unwrap_and_keep_the_exceptions_own_cause() -> None:
    cause = RuntimeError("the cause")
    inner = ValueError("lone")
    inner.__cause__ = cause
    with pytest.raises(ValueError, match="lone") as raised, lone_exceptions_unwrapped():
        raise BaseExceptionGroup("outer", [ExceptionGroup("inner", [inner])])
    assert raised.value is inner
    assert raised.value.__cause__ is cause
