"""A daemon's own capture and key log (``pcap``, ``keylog``, settings every
daemon has) are enough for Wireshark: the sealed-only Authenticator's capture
of a provider asking it (TRP inside a TEP session) decodes and decrypts in
tshark with the daemon's key log alone."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from dofpy.credentials import load_credentials
from dofpy.oap.core import OapConfig
from dofpy.security.keylog import parse_keylog, tshark_key_options
from dofpy.testing.example import THERMOSTAT, THERMOSTAT_OID, Thermostat
from dofpy.testing.tshark import require_tshark
from dofpy.trio import open_node
from dofpy.wire.permissions import Action, BindingPermission, PermissionSet
from dofpy_services.authenticator.service import AUTHENTICATOR, AuthenticatorConfig
from interop.capture_check import check_capture
from tests.services.test_daemon_credentials import cli
from tests.services.test_daemon_runner import WAIT, running


async def test_the_authenticators_capture_decrypts_with_its_key_log(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tshark = require_tshark()
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
    provides = BindingPermission(Action.PROVIDE, THERMOSTAT_OID, THERMOSTAT.iid)
    reads = BindingPermission(Action.READ, THERMOSTAT_OID, THERMOSTAT.iid)
    interface = str(THERMOSTAT.iid)
    cli(capsys, "grant", *node, "thermostat@example.org", "--actions", "p",
        "--object", "thermostat@example.org", "--interface", interface)  # fmt: skip
    cli(capsys, "grant", *node, "client@example.org", "--actions", "r",
        "--object", "thermostat@example.org", "--interface", interface)  # fmt: skip
    pcap, keylog = tmp_path / "as.pcap", tmp_path / "as.keys"
    settings = AuthenticatorConfig(
        listen=("127.0.0.1", 0),
        db=db,
        credentials=str(tmp_path / "as.cred"),
        sealed_only=True,
        pcap=str(pcap),
        keylog=str(keylog),
    )
    async with running(AUTHENTICATOR, settings) as authenticator:
        provider_config = (
            load_credentials(tmp_path / "thermostat.cred")
            .with_authenticator(authenticator.udp)
            .node_config(PermissionSet((provides,)), seal_authenticator=True)
        )
        client_config = (
            load_credentials(tmp_path / "client.cred")
            .with_authenticator(authenticator.udp)
            .node_config(PermissionSet((reads,)))
        )
        async with (
            open_node(config=OapConfig(node=provider_config)) as provider,
            open_node(config=OapConfig(node=client_config)) as client,
        ):
            provider.provide(THERMOSTAT_OID, THERMOSTAT, Thermostat())
            with trio.fail_after(WAIT):
                await client.secure_session(provider.local_address)
        await authenticator.signals.send(15)
    assert authenticator.status == 0
    assert keylog.stat().st_mode & 0o777 == 0o600
    keys = parse_keylog(keylog.read_text().splitlines())
    # Its own session with the provider, and the one it granted the client.
    assert len(keys) == 2
    report = check_capture(pcap, tshark_key_options(keys), "keys", tshark=tshark, workdir=tmp_path)
    (conversation,) = report.conversations
    assert conversation.problems == []
    assert conversation.kinds["TEP Accept"] == 1
    assert conversation.kinds["TRP Request Session Response"] == 1
