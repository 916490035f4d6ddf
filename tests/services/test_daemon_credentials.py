"""The production way to join a domain, end to end on UDP: ``add-node
--credentials-out`` writes each node's file, the Authenticator serves (on the
runner) with its own credentials and ``sealed_only``, a provider and a client
load theirs, and the client reads the provider's property inside a secure
session keyed by the Authenticator (the provider's TRP sealed)."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from dofpy.credentials import load_credentials
from dofpy.oap.core import OapConfig
from dofpy.testing.example import THERMOSTAT, THERMOSTAT_OID, Thermostat
from dofpy.trio import open_node
from dofpy.wire.oid import OID
from dofpy.wire.permissions import (
    Action,
    BindingPermission,
    PermissionSet,
)
from dofpy_services.authenticator.service import AUTHENTICATOR, AuthenticatorConfig
from dofpy_services.cli import main
from tests.services.test_daemon_runner import WAIT, running


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> None:
    status = main(["authenticator", *argv])
    assert status == 0, capsys.readouterr().err


async def test_nodes_join_with_credentials_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = str(tmp_path / "as.db")
    node = ["--db", db, "--domain", "example.org"]
    cli(capsys, "init-domain", "--db", db, "example.org")
    for name in ("as", "thermostat", "client"):
        cli(
            capsys,
            "add-node",
            *node,
            f"{name}@example.org",
            "--credentials-out",
            str(tmp_path / f"{name}.cred"),
        )
    reads = BindingPermission(Action.READ, OID(0), THERMOSTAT.iid)
    provides = BindingPermission(Action.PROVIDE, THERMOSTAT_OID, THERMOSTAT.iid)
    interface = str(THERMOSTAT.iid)
    provider_grant = [
        "--actions",
        "p",
        "--object",
        "thermostat@example.org",
        "--interface",
        interface,
    ]
    cli(capsys, "grant", *node, "thermostat@example.org", *provider_grant)
    cli(capsys, "grant", *node, "client@example.org", "--actions", "r")
    settings = AuthenticatorConfig(
        listen=("127.0.0.1", 0),
        db=db,
        credentials=str(tmp_path / "as.cred"),
        sealed_only=True,
    )
    async with running(AUTHENTICATOR, settings) as authenticator:
        provider_file = load_credentials(tmp_path / "thermostat.cred")
        client_file = load_credentials(tmp_path / "client.cred")
        provider_config = provider_file.with_authenticator(authenticator.udp).node_config(
            PermissionSet((provides,)), seal_authenticator=True
        )
        client_config = client_file.with_authenticator(authenticator.udp).node_config(
            PermissionSet((reads,))
        )
        async with (
            open_node(config=OapConfig(node=provider_config)) as provider,
            open_node(config=OapConfig(node=client_config)) as client,
        ):
            provider.provide(THERMOSTAT_OID, THERMOSTAT, Thermostat())
            with trio.fail_after(WAIT):
                temperature = await client.get(
                    provider.local_address, THERMOSTAT_OID, THERMOSTAT, "temperature"
                )
                identity = await client.secure_session(provider.local_address)
            sealed = provider.core.node.peer_identity(authenticator.udp)
        await authenticator.signals.send(15)
    assert temperature == 21 and identity == provider_file.identity
    # The provider asked for the session key inside a session with the Authenticator.
    assert sealed == load_credentials(tmp_path / "as.cred").identity
    assert authenticator.status == 0


def test_add_node_writes_the_authenticators_identity_into_the_credentials(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = str(tmp_path / "as.db")
    cli(capsys, "init-domain", "--db", db, "example.org")
    out = tmp_path / "device.cred"
    node = ["add-node", "--db", db, "--domain", "example.org", "device@example.org"]
    cli(
        capsys,
        *node,
        "--credentials-out",
        str(out),
        "--authenticator",
        "127.0.0.1:3567",
        "--authenticator-identity",
        "as@example.org",
    )
    written = load_credentials(out)
    assert written.authenticator_identity == OID(3, b"as@example.org")
    assert written.security_config().peer_identities == {
        ("127.0.0.1", 3567): OID(3, b"as@example.org")
    }
    other = [*node[:-1], "other@example.org", "--authenticator-identity", "as@example.org"]
    refused = main(["authenticator", *other])
    assert refused != 0
    assert "--authenticator-identity needs --authenticator" in capsys.readouterr().err
