"""``dofpy update serve`` as a daemon on the framework (in process, 127.0.0.1
port 0): it steps the stored campaign, and devices the Version registry sees
booted and accepted on the new version are counted succeeded; the others are
not."""

from __future__ import annotations

import dataclasses
import signal
import time
from pathlib import Path

import trio

from dofpy_services.image.keys import write_private_key
from dofpy_services.update import campaign_store as cs
from dofpy_services.update.audit import verify_trail
from dofpy_services.update.campaign import CampaignState
from dofpy_services.update.service import UPDATE, UpdateConfig
from dofpy_services.update.tracking import DeviceState
from dofpy_services.update.worker import CampaignWorker
from dofpy_services.version.store import open_version_store
from tests.services.test_daemon_runner import WAIT, running
from tests.services.version_helpers import device, report
from tests.update.campaign_fixtures import ROOT, SERVICE_KEY, full_approvals, make_spec, opened

DEVICES = 6


def _prepare(tmp_path: Path) -> tuple[str, str]:
    campaigns, versions = str(tmp_path / "campaigns.db"), str(tmp_path / "version.db")
    with open_version_store(versions) as store:
        for n in range(DEVICES):
            # The even ones run the new version, accepted; the odd ones the old.
            version = "2.0" if n % 2 == 0 else "1.0"
            store.report(device(n), report("meter", version, 20 if n % 2 == 0 else 10), 100.0)
    wall = int(time.time())
    spec = make_spec(canary_share=1.0, terms={"start": wall - 60, "deadline": wall + 86_400})
    spec = dataclasses.replace(spec, success_threshold=0.0)
    with opened(campaigns) as db:
        worker = CampaignWorker(db, SERVICE_KEY, "operator")
        worker.create(spec, now=wall, actor="operator")
        for signed in full_approvals(spec.terms):
            worker.approve(spec.name, signed, ROOT, now=wall, actor="operator")
        worker.start(
            spec.name,
            ROOT,
            lambda _s: [(str(device(n)), 0) for n in range(DEVICES)],
            now=wall,
            actor="operator",
        )
    return campaigns, versions


async def test_serve_drives_the_stored_campaign(tmp_path: Path) -> None:
    campaigns, versions = await trio.to_thread.run_sync(_prepare, tmp_path)
    write_private_key(str(tmp_path / "update.key"), SERVICE_KEY)
    config = UpdateConfig(
        listen=("127.0.0.1", 0),
        db=campaigns,
        service_key=str(tmp_path / "update.key"),
        version_db=versions,
        step_interval=0.02,
        lease=5.0,
        owner="daemon-1",
    )

    def states() -> dict[str, DeviceState]:
        with opened(campaigns) as db:
            return {r.device: r.state for r in db.read(lambda tx: cs.load_devices(tx, "spring"))}

    async with running(UPDATE, config) as daemon:
        with trio.fail_after(WAIT):
            while True:
                now = await trio.to_thread.run_sync(states)
                if sum(s is DeviceState.SUCCEEDED for s in now.values()) == DEVICES // 2:
                    break
                await trio.sleep(0.02)
        await daemon.signals.send(signal.SIGTERM)
    assert daemon.status == 0
    final = await trio.to_thread.run_sync(states)
    for n in range(DEVICES):
        expected = DeviceState.SUCCEEDED if n % 2 == 0 else DeviceState.NOTIFIED
        assert final[str(device(n))] is expected, n
    with opened(campaigns) as db:
        assert db.read(lambda tx: cs.load_campaign(tx, "spring")).state is CampaignState.RUNNING
        writers = db.read(
            lambda tx: {r[0] for r in tx.rows("SELECT writer FROM campaign_transitions")}
        )
        assert "daemon-1" in writers
        verify_trail(db.read(cs.audit_trail), SERVICE_KEY.public_key, root=ROOT)


def test_serve_refuses_without_its_store_or_key(tmp_path: Path) -> None:
    import pytest  # noqa: PLC0415

    from dofpy_services.daemon.config import ConfigError  # noqa: PLC0415

    assert UPDATE.check is not None
    with pytest.raises(ConfigError, match="campaign store"):
        UPDATE.check(UpdateConfig(listen=("127.0.0.1", 0)))
    with pytest.raises(ConfigError, match="service_key"):
        UPDATE.check(UpdateConfig(listen=("127.0.0.1", 0), db=str(tmp_path / "c.db")))
