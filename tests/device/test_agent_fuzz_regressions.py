"""What the device_agent fuzz target (fuzz/targets/device_agent.py) found,
each replayed as the smallest run that showed it: the target's device and
services, honest but for the answers listed by their position among the
agent's port calls (``World.calls``). Each run also checks the target's
properties (only Rebooted raised, only accepted or verified images booted,
settled within its bounds); the tests add what the outcome must be.

Found: an image verified for one assignment installed for the next one
(the agent's cached image outlived an update whose report was given up on);
a ``Refused`` answer to anything but ``authorise`` escaped the agent;
a retry_after of infinity, NaN or 10^12 seconds (NotNow from the Update
service, NotStored from the Version service) parked the device or crashed
``trio.sleep_until``; and steps that talk to the services after a reboot
(the manifest is fetched again) or report a deferral had no RETRY row in the
table (``NoTransition``): TRY_UPDATER, ASK_USER, CHECK_SPACE, VERIFY_IMAGE;
and a failure reason cut to 200 characters where the report allows 200
UTF-8 bytes (ValueError signing it).

The last test is not the fuzzer's (its campaigns never put an updater's
update after a revert) but a neighbour of the cached image, found fixing it:
the switch a revert's reboot left recorded, read by the next update's trial
boot.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio.testing

from dofpy.oap.interface import outgoing_values
from dofpy.wire.values import encode_values
from dofpy_services.device.boot_records import Layout, Slot
from dofpy_services.update.device_interface import (
    UPDATE_DEVICE,
    Assignment,
    InstallOutcome,
    InstallReport,
)
from dofpy_services.update.device_provider import PlannedUpdate
from fuzz.targets import device_agent as fuzzed
from fuzz.targets.device_agent import EXCEPTION, LOST, RAW, RESET, World, run_with_faults
from tests.device.test_agent_update import (
    DEVICE,
    MANIFEST_DIGEST,
    OLD,
    RESCUE,
    NetsimImages,
    world,
)
from tests.device.test_agent_updater import UPDATER as UPDATER_IMAGE

SEED, AB = 0, 1  # header bit 0: the layout
UPDATE, MANUAL, UPDATER = 0, 2, 4  # header bits 1-2: the campaign

NOT_NOW = b"\x06"  # UPDATE_DEVICE's exception codes
REFUSED = b"\x07"
NOT_STORED = b"\x03"  # VERSION_REPORT's


def settled(world: World) -> tuple[str, bool]:
    booted = world.boot.booted()
    return booted.image.version, booted.accepted


def only_report(world: World) -> InstallReport:
    (report,) = world.reports
    return report


def test_the_fault_positions_are_the_calls_named() -> None:
    # The positions below are these calls of the honest runs.
    assert run_with_faults(UPDATER).calls[7:9] == ["progress", "manifest"]
    assert run_with_faults(MANUAL).calls[3:5] == ["ask_user", "authorise"]
    calls = run_with_faults(SEED).calls
    assert calls[:5] == ["report", "poll", "manifest", "authorise", "progress"]
    assert calls[9:12] == ["transfer", "progress", "manifest"]
    assert calls[14] == "install_report"


@pytest.mark.parametrize("layout", [SEED, AB])
def test_a_lost_session_in_the_trial_boot_of_a_new_updater_is_retried(layout: int) -> None:
    # After the reboot into the new Reprogram image (on trial) the manifest
    # is fetched again; a lost session there was NoTransition(try_updater, retry).
    world = run_with_faults(UPDATER | layout, (8, LOST, b"\x00"))
    assert only_report(world).outcome is InstallOutcome.SUCCEEDED
    assert settled(world) == ("1.0", True)
    assert world.boot.slot_record(Slot.REPROGRAM).image == fuzzed._RESCUE_NEW.slot_image()


def test_an_updater_trial_that_cannot_reach_the_services_goes_back_to_normal() -> None:
    # Every answer in the trial boot lost: giving up leaves the trial
    # Reprogram image for the accepted Normal one, and the failure is reported.
    world = run_with_faults(UPDATER, *((position, LOST, b"\x00") for position in range(8, 12)))
    report = only_report(world)
    assert report.outcome is InstallOutcome.FAILED
    assert settled(world) == ("1.0", True)
    assert world.boot.booted().slot.is_normal


@pytest.mark.parametrize("position", [1, 4, 14])
def test_refused_where_the_step_does_not_expect_it_is_retried(position: int) -> None:
    # poll, progress, install_report: Refused used to escape run().
    world = run_with_faults(SEED, (position, EXCEPTION, REFUSED + encode_values(["no"])))
    assert [r.outcome for r in world.reports] == [InstallOutcome.SUCCEEDED]
    assert settled(world) == ("2.0", True)


def test_an_install_report_always_refused_is_given_up_on_the_device_unharmed() -> None:
    refused = (EXCEPTION, REFUSED + encode_values(["the campaign is gone"]))
    world = run_with_faults(SEED, *((14 + n, *refused) for n in range(4)))
    assert world.updates.progress[fuzzed._DEVICE].report is None  # never taken
    assert settled(world) == ("2.0", True)


@pytest.mark.parametrize("retry_after", [float("inf"), float("nan"), 1e12, -5.0])
def test_a_bogus_retry_after_waits_at_most_max_wait(retry_after: float) -> None:
    world = run_with_faults(SEED, (3, EXCEPTION, NOT_NOW + encode_values([retry_after])))
    assert only_report(world).outcome is InstallOutcome.SUCCEEDED
    assert world.settled_at <= fuzzed._MAX_WAIT + 3600


def test_a_bogus_not_stored_retry_after_is_capped_by_the_version_client() -> None:
    world = run_with_faults(SEED, (0, EXCEPTION, NOT_STORED + encode_values([1e12])))
    assert only_report(world).outcome is InstallOutcome.SUCCEEDED
    assert world.settled_at < 3600


def test_a_deferral_whose_progress_is_lost_is_asked_again() -> None:
    # The user defers (RAW 0x01: defer, by 60 s); reporting the deferral
    # fails: NoTransition(ask_user, retry) before.
    world = run_with_faults(MANUAL, (3, RAW, b"\x01\x01"), (4, LOST, b"\x00"))
    assert world.calls[3:6] == ["ask_user", "progress", "ask_user"]
    assert only_report(world).outcome is InstallOutcome.SUCCEEDED
    assert settled(world) == ("2.0", True)


@pytest.mark.parametrize("reset_at", [2, 9], ids=["check_space", "verify_image"])
def test_a_reset_then_a_lost_manifest_fetch_is_retried(reset_at: int) -> None:
    # Reset after the step (RESET with an odd byte): the agent restarts in
    # the next state (the test's id), fetches the manifest again, and loses
    # the session.
    world = run_with_faults(SEED, (reset_at, RESET, b"\x01"), (reset_at + 1, LOST, b"\x00"))
    assert world.calls[reset_at + 1 : reset_at + 3] == ["manifest", "manifest"]
    assert only_report(world).outcome is InstallOutcome.SUCCEEDED
    assert settled(world) == ("2.0", True)


def poll_answer(assignment: Assignment) -> bytes:
    """``poll``'s answer on the wire, naming ``assignment``."""
    results = UPDATE_DEVICE.method("poll").results
    return encode_values(list(outgoing_values(results, ([assignment],), "poll")))


@pytest.mark.parametrize("layout", [SEED, AB])
def test_the_next_assignment_does_not_install_the_image_verified_for_the_last(
    layout: int,
) -> None:
    # A poll names campaign "gone" with the newer image's manifest; the
    # service refuses it (authorise, then its report, until the agent gives
    # up); then c1 is assigned. The image verified for "gone" was still
    # cached: on A/B it was written for c1, and after the reboot into it the
    # agent (now verifying c1's manifest) found no slot with c1's image
    # (StopIteration in ENTER_NORMAL).
    newer = fuzzed._campaign("gone", fuzzed._MANIFEST_NEWER, fuzzed._NEWER, fuzzed._OLD)
    world = run_with_faults(layout, (1, RAW, poll_answer(newer.assignment)))
    assert world.calls[1:9] == ["poll", "manifest", "authorise", *["install_report"] * 4, "report"]
    # The report on "gone" was never taken; c1's image is what runs.
    assert [(r.campaign, r.outcome) for r in world.reports] == [("c1", InstallOutcome.SUCCEEDED)]
    assert settled(world) == ("2.0", True)


def test_a_long_reason_in_another_script_fits_the_report() -> None:
    # The service refuses with 150 two-byte characters: cut to 200
    # characters the reason was 300 UTF-8 bytes, over the report's limit,
    # and signing the report raised ValueError in every REPORT step.
    world = run_with_faults(SEED, (3, EXCEPTION, REFUSED + encode_values(["é" * 150])))
    report = world.updates.progress[fuzzed._DEVICE].report
    assert report is not None and report.outcome is InstallOutcome.FAILED
    assert report.reason == "é" * 100
    assert settled(world) == ("1.0", True)


async def test_an_updater_campaign_after_a_revert_tries_its_image(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    # A/B: c1's image fails its health check and is reverted by a reboot
    # (whose switch stayed recorded); the next campaign updates the updater,
    # and its trial boot used to read that stale switch as "the new
    # Reprogram image did not boot": failed without being tried.
    checks = 0

    async def sick_once() -> str:
        nonlocal checks
        checks += 1
        return "the service did not start" if checks == 1 else ""

    w = world(tmp_path, Layout.AB, health=sick_once)
    await w.run_update()
    first = w.updates.progress[DEVICE].report
    assert first is not None and first.outcome is InstallOutcome.FAILED
    w.images = NetsimImages(image=UPDATER_IMAGE)
    assignment = Assignment(
        "c2", MANIFEST_DIGEST, "r2", UPDATER_IMAGE.sequence, 0.0, 1e9, updater=True
    )
    w.updates.plan.assign(
        DEVICE,
        PlannedUpdate(assignment, UPDATER_IMAGE.slot_image().digest, RESCUE.slot_image().digest),
    )
    await w.run_update_of("c2")
    report = w.updates.progress[DEVICE].report
    assert report is not None and report.campaign == "c2"
    assert (report.outcome, report.reason) == (InstallOutcome.SUCCEEDED, "")
    assert w.boot.slot_record(Slot.REPROGRAM).image == UPDATER_IMAGE.slot_image()
    assert (w.boot.booted().image, w.boot.booted().accepted) == (OLD.slot_image(), True)


def test_the_push_wait_of_an_update_service_that_pushes_nothing_falls_back_to_polling() -> None:
    """Found by CI's `make fuzz` once pushes landed: the idle agent's wait
    asked the stand-in Update service for ``watch``, which it did not know.
    A service without pushes answers it with an error; the agent waits out
    its poll interval and carries on (the crash input, replayed)."""
    data = bytes.fromhex(
        (Path(__file__).parent / "fuzz_regressions" / "device_agent_watch.hex").read_text().strip()
    )
    fuzzed.target(data)  # raises on any property broken
