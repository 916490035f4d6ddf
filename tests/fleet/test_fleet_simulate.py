"""``dofpy fleet simulate`` on a small fleet against running daemons (the
same code path as a scale run): six real agents, 5% datagram loss on every
device-service link, two devices losing power mid-update, one offline for
the whole campaign. The campaign is started once the fleet has checked in;
the command stops when it settles and prints the outcomes and throughput.
Every online device is updated (power cuts survived); the offline one times
out; the record matches each device."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import trio

from dofpy_services.cli import main
from dofpy_services.device.boot_records import Slot
from dofpy_services.device.simulated import SimulatedBootloader
from dofpy_services.update import campaign_store as cs
from dofpy_services.update.tracking import DeviceState
from dofpy_services.version.interface import QueryFilter
from dofpy_services.version.store import open_version_store
from tests.device.test_device_run import OLD, RESCUE
from tests.fleet.world import CLASS_NAME, DEVICE_CLASS, DOMAIN, NEW_DIGEST, VENDOR, world
from tests.services.test_daemon_runner import WAIT
from tests.update.campaign_fixtures import opened

DEVICES = 6


def _checked_in(versions: str) -> int:
    if not Path(versions).exists():
        return 0
    with open_version_store(versions) as store:
        return sum(1 for _ in store.stream(QueryFilter(device_class=CLASS_NAME)))


async def test_fleet_simulate_updates_a_small_lossy_fleet(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "old.bin").write_bytes(OLD.data)
    (tmp_path / "rescue.bin").write_bytes(RESCUE.data)
    async with world(tmp_path, capsys, 0, silence_timeout=8.0) as w:
        update, version, image = w.services.updates[0], w.services.version, w.services.images[0]
        argv = [
            "fleet", "simulate", "--devices", str(DEVICES), "--dir", str(tmp_path / "fleet"),
            "--authenticator-db", str(tmp_path / "as.db"), "--domain", DOMAIN,
            "--authenticator", f"127.0.0.1:{w.authenticator[1]}",
            "--campaign-db", w.campaigns, "--campaign", w.spec.name,
            "--version", f"127.0.0.1:{version[1]}", "--version-identity", f"version@{DOMAIN}",
            "--update", f"127.0.0.1:{update[1]}", "--update-identity", f"update@{DOMAIN}",
            "--image", f"127.0.0.1:{image[1]}",
            "--trust-root", str(w.root_file), "--vendor", str(VENDOR),
            "--class", str(DEVICE_CLASS), "--class-name", CLASS_NAME,
            "--firmware", str(tmp_path / "old.bin"), "--firmware-version", OLD.version,
            "--firmware-sequence", str(OLD.sequence), "--reprogram", str(tmp_path / "rescue.bin"),
            "--normal-capacity", "64000", "--reprogram-capacity", "8000",
            "--loss", "0.05", "--power-cuts", "0.34", "--offline", "0.17", "--seed", "5",
            "--poll-interval", "0.3", "--duration", str(10 * WAIT), "--format", "json",
        ]  # fmt: skip
        status: list[int] = []

        async def simulate() -> None:
            status.append(await trio.to_thread.run_sync(main, argv))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(simulate)
            with trio.fail_after(4 * WAIT):
                while await trio.to_thread.run_sync(_checked_in, w.versions) < DEVICES:
                    await trio.sleep(0.1)
            await trio.to_thread.run_sync(w.start_campaign)
        with opened(w.campaigns) as db:
            rows = db.read(lambda tx: cs.load_devices(tx, w.spec.name))
    out, err = capsys.readouterr()
    assert status == [0], err
    document = json.loads(out[out.index("{") :])
    assert document["devices"] == DEVICES
    assert document["errors"] == []
    assert document["outcomes"] == {"offline": 1, "succeeded": DEVICES - 1}
    assert document["power_cuts"] == 2
    assert document["datagrams_dropped"] > 0
    assert document["updates_per_minute"] > 0
    assert document["campaign"]["state"] == "completed"
    assert document["campaign"]["devices"] == {"succeeded": DEVICES - 1, "timed-out": 1}
    for row in rows:
        folder = tmp_path / "fleet" / f"sim-{row.device.split('-')[1].split('@')[0]}"
        boot = SimulatedBootloader(folder).booted()
        if row.state is DeviceState.SUCCEEDED:
            assert (boot.slot, boot.image.digest, boot.accepted) == (Slot.NORMAL, NEW_DIGEST, True)
            assert row.actual_version == boot.image.version == "2.0"
        else:
            assert row.state is DeviceState.TIMED_OUT
            assert (boot.image, boot.accepted) == (OLD.slot_image(), True)  # never touched
