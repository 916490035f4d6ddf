"""``dofpy update serve`` pushes: the daemon in process with its own
credentials (an Authenticator daemon keys the sessions, real sockets on
127.0.0.1), a device granted ``xs`` on UpdateDevice waiting with a poll
interval far beyond the test's bound, and a campaign started while it
waits: the daemon's step notifies the device and the device hears its
window from the push, without polling."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import trio

from dofpy.credentials import load_credentials
from dofpy.oap.config import OapConfig
from dofpy.trio import open_node
from dofpy.wire.oid import OID
from dofpy.wire.permissions import Action, BindingPermission, PermissionSet
from dofpy_services.authenticator.service import AUTHENTICATOR, AuthenticatorConfig
from dofpy_services.device.update_client import UpdateDeviceClient
from dofpy_services.image.keys import write_private_key
from dofpy_services.update import campaign_store as cs
from dofpy_services.update.device_interface import UPDATE_DEVICE, Assignment
from dofpy_services.update.service import UPDATE, UpdateConfig
from dofpy_services.update.tracking import DeviceState
from dofpy_services.update.worker import CampaignWorker
from tests.services.test_daemon_runner import WAIT, running
from tests.services.test_version_daemon import cli, with_authenticator
from tests.update.campaign_fixtures import ROOT, SERVICE_KEY, full_approvals, make_spec, opened

DOMAIN = "example.org"
DEVICE = OID(3, f"device-0@{DOMAIN}".encode())
SERVICE = OID(3, f"update@{DOMAIN}".encode())
NEVER = 1e6


def _enrol(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> str:
    db = str(tmp_path / "as.db")
    node = ["--db", db, "--domain", DOMAIN]
    cli(capsys, "authenticator", "init-domain", "--db", db, DOMAIN)
    for name in ("as", "update", "device-0"):
        cli(capsys, "authenticator", "add-node", *node, f"{name}@{DOMAIN}",
            "--credentials-out", str(tmp_path / f"{name}.cred"))  # fmt: skip
    interface = ["--interface", str(UPDATE_DEVICE.iid)]
    cli(capsys, "authenticator", "grant", *node, f"update@{DOMAIN}", "--actions", "p", *interface)
    cli(capsys, "authenticator", "grant", *node, f"device-0@{DOMAIN}", "--actions", "xs",
        *interface)  # fmt: skip
    return db


def _create(campaigns: str) -> int:
    wall = int(time.time())
    spec = make_spec(canary_share=1.0, terms={"start": wall - 60, "deadline": wall + 86_400})
    with opened(campaigns) as db:
        worker = CampaignWorker(db, SERVICE_KEY, "operator")
        worker.create(spec, now=wall, actor="operator")
        for signed in full_approvals(spec.terms):
            worker.approve(spec.name, signed, ROOT, now=wall, actor="operator")
    return wall


def _start(campaigns: str) -> None:
    with opened(campaigns) as db:
        CampaignWorker(db, SERVICE_KEY, "operator").start(
            "spring", ROOT, lambda _s: [(str(DEVICE), 0)], now=time.time(), actor="operator"
        )


def _state(campaigns: str) -> DeviceState:
    with opened(campaigns) as db:
        row = db.read(lambda tx: cs.find_device(tx, "spring", str(DEVICE)))
    assert row is not None
    return row.state


async def test_serve_pushes_the_window_to_a_subscribed_device(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    auth_db = _enrol(tmp_path, capsys)
    campaigns = str(tmp_path / "campaigns.db")
    wall = await trio.to_thread.run_sync(_create, campaigns)
    write_private_key(str(tmp_path / "update.key"), SERVICE_KEY)
    settings = AuthenticatorConfig(
        listen=("127.0.0.1", 0), db=auth_db, credentials=str(tmp_path / "as.cred")
    )
    async with running(AUTHENTICATOR, settings) as authenticator:
        at = authenticator.udp
        config = UpdateConfig(
            listen=("127.0.0.1", 0),
            db=campaigns,
            service_key=str(tmp_path / "update.key"),
            step_interval=0.05,
            lease=5.0,
            credentials=str(with_authenticator(tmp_path, "update", at)),
        )
        credentials = load_credentials(with_authenticator(tmp_path, "device-0", at))
        asks = PermissionSet(
            (BindingPermission(Action.EXECUTE | Action.SUBSCRIBE, OID(0), UPDATE_DEVICE.iid),)
        )
        device_config = OapConfig(node=credentials.node_config(asks))
        async with (
            running(UPDATE, config) as update,
            open_node(("127.0.0.1", 0), device_config) as device,
        ):
            client = UpdateDeviceClient(device, ("127.0.0.1", update.udp[1]), identity=SERVICE)
            learnt: list[Assignment] = []
            with trio.fail_after(WAIT):
                assert await client.poll() == []  # nothing yet: the device goes idle

                async def wait() -> None:
                    learnt.extend(await client.wait_for_assignment(trio.current_time() + NEVER))

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(wait)
                    await trio.to_thread.run_sync(_start, campaigns)
            state = await trio.to_thread.run_sync(_state, campaigns)
            await update.signals.send(15)
        await authenticator.signals.send(15)
    (assignment,) = learnt
    assert assignment.campaign == "spring"
    assert (assignment.window_start, assignment.window_end) == (wall - 60, wall + 86_400)
    assert client.pushes_received == 1 and client.push_failures == 0
    assert state is DeviceState.NOTIFIED
