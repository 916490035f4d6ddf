"""Non-OAP applications on a DofNode over UDP on 127.0.0.1: an Authenticator
that is also an OAP node, deciding TRP and its own handshakes in worker
threads (the event loop never waits on the credential store)."""

from __future__ import annotations

import trio

from dofpy.oap.core import AuthenticatorRequested, CommandReceived, OapConfig
from dofpy.security.authenticator import TrpAuthenticator
from dofpy.session.node import NodeConfig
from dofpy.testing import LocalDomain
from dofpy.testing import grant as grant_on
from dofpy.testing.example import THERMOSTAT, THERMOSTAT_OID, Thermostat
from dofpy.trio import DofNode, open_node
from dofpy.wire.dpp import AppId
from dofpy.wire.oid import OID
from dofpy.wire.trp import decode_trp_untrusted, encode_trp

DOMAIN = OID(6, b"example.org")
AUTHENTICATOR_ID = OID(3, b"authenticator@example.org")
PROVIDER_ID = OID(3, b"thermostat-host@example.org")
CLIENT_ID = OID(3, b"console@example.org")
HEALTH_OID = OID(3, b"health@example.org")


class Deciding:
    """The Authenticator's TRP handler: each decision in a worker thread."""

    def __init__(
        self, node: DofNode, authenticator: TrpAuthenticator, nursery: trio.Nursery
    ) -> None:
        self.node, self.authenticator, self.nursery = node, authenticator, nursery
        self.seen: list[CommandReceived | AuthenticatorRequested] = []

    def __call__(self, event: CommandReceived | AuthenticatorRequested) -> None:
        self.seen.append(event)
        self.nursery.start_soon(self.decide, event)

    async def decide(self, event: CommandReceived | AuthenticatorRequested) -> None:
        node = self.node.core.node
        if isinstance(event, AuthenticatorRequested):
            decision = await trio.to_thread.run_sync(self.authenticator.decide, event.command)
            node.answer_authenticator(event.token, decision.response, trio.current_time())
        else:
            pdu = decode_trp_untrusted(event.payload, is_response=False)
            decision = await trio.to_thread.run_sync(self.authenticator.decide, pdu)
            node.send_response(
                event.peer,
                event.op_count,
                AppId.TRP,
                encode_trp(decision.response),
                trio.current_time(),
            )
        self.node.wakeup()


async def test_authenticator_node_decides_in_threads_and_serves_oap() -> None:
    domain = LocalDomain(DOMAIN)
    everything = grant_on("rwxsp", interface=THERMOSTAT.iid)
    domain.enrol(AUTHENTICATOR_ID, grant_on("p", interface=THERMOSTAT.iid))
    domain.enrol(PROVIDER_ID, grant_on("p", interface=THERMOSTAT.iid))
    domain.enrol(CLIENT_ID, everything)
    authenticator_config = OapConfig(
        node=NodeConfig(
            node_id=AUTHENTICATOR_ID,
            applications=(AppId.DSP, AppId.OAP, AppId.TRP, AppId.COMMON),
            security=domain.security(AUTHENTICATOR_ID, defer_authenticator=True),
        )
    )
    async with trio.open_nursery() as nursery, open_node(config=authenticator_config) as auth:
        deciding = Deciding(auth, domain.authenticator, nursery)
        auth.set_application_handler(AppId.TRP, deciding)
        auth.provide(HEALTH_OID, THERMOSTAT, Thermostat())
        provider_config = OapConfig(
            node=domain.node_config(
                PROVIDER_ID, authenticator=auth.local_address, seal_authenticator=True
            )
        )
        client_config = OapConfig(node=domain.node_config(CLIENT_ID))
        async with (
            open_node(config=provider_config) as provider,
            open_node(config=client_config) as client,
        ):
            provider.provide(THERMOSTAT_OID, THERMOSTAT, Thermostat())
            temperature = await client.get(
                provider.local_address, THERMOSTAT_OID, THERMOSTAT, "temperature"
            )
            assert temperature == 21
            health = await client.get(auth.local_address, HEALTH_OID, THERMOSTAT, "temperature")
            assert health == 21
        nursery.cancel_scope.cancel()
    # The provider's handshake with the Authenticator and the client's were
    # deferred; the provider's Request Session came sealed, as a TRP command.
    requests = [e for e in deciding.seen if isinstance(e, AuthenticatorRequested)]
    assert sorted(str(r.initiator) for r in requests) == sorted([str(PROVIDER_ID), str(CLIENT_ID)])
    commands = [e for e in deciding.seen if isinstance(e, CommandReceived)]
    assert [(c.app_id, c.identity) for c in commands] == [(AppId.TRP, PROVIDER_ID)]
    assert auth.statistics().handler_errors == 0


async def test_commands_of_an_application_without_a_handler_are_dropped() -> None:
    config = OapConfig(node=NodeConfig(applications=(AppId.DSP, AppId.OAP, AppId.TRP)))
    async with open_node(config=config) as server, open_node() as requestor:
        server.provide(THERMOSTAT_OID, THERMOSTAT, Thermostat())
        calls: list[object] = []

        def failing(event: CommandReceived | AuthenticatorRequested) -> None:
            calls.append(event)
            raise RuntimeError("a broken handler")

        server.set_application_handler(AppId.TRP, failing)
        peer = server.local_address
        node = requestor.core.node
        node.send_command(peer, AppId.TRP, b"\x00", trio.current_time(), expect_response=False)
        requestor.wakeup()
        # The node keeps serving OAP after the handler raised...
        assert await requestor.get(peer, THERMOSTAT_OID, THERMOSTAT, "temperature") == 21
        assert len(calls) == 1
        assert server.statistics().handler_errors == 1
        # ... and without a handler the command goes nowhere.
        server.set_application_handler(AppId.TRP, None)
        node.send_command(peer, AppId.TRP, b"\x00", trio.current_time(), expect_response=False)
        requestor.wakeup()
        assert await requestor.get(peer, THERMOSTAT_OID, THERMOSTAT, "temperature") == 21
        assert len(calls) == 1
        assert server.statistics().handler_errors == 1
