"""A whole domain on 127.0.0.1 for end-to-end update tests: the
Authenticator, Image, Version and Update daemons (the daemon foundation in
process, real sockets, each with its own credentials), a published signed
image, a stored campaign with its approvals, and a simulated fleet enrolled
in the domain (identities, grants, report keys in the Update service's
device table). The campaign store is a SQLite file, or a PostgreSQL URL
shared by several Update daemons (owners ``update-1``, ``update-2``, ...:
one service scaled out, one identity, one address each)."""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio

from dofpy.image import Party
from dofpy.image.trust import TrustRoot
from dofpy.transfer.messages import TRANSFER_IID
from dofpy.wire.oid import OID
from dofpy_services.authenticator.grants import parse_domain
from dofpy_services.authenticator.service import AUTHENTICATOR, AuthenticatorConfig
from dofpy_services.authenticator.store import open_store
from dofpy_services.cli import main
from dofpy_services.fleet.enrol import EnrolledDevice, Firmware, enrol_fleet
from dofpy_services.fleet.simulate import FleetServices
from dofpy_services.image.keys import write_private_key
from dofpy_services.image.service import IMAGE, ImageConfig
from dofpy_services.image.serving import IMAGE_INTERFACE
from dofpy_services.image.signing import load_trust_root
from dofpy_services.update import campaign_store as cs
from dofpy_services.update.campaign import CampaignSpec, CampaignState
from dofpy_services.update.device_interface import UPDATE_DEVICE
from dofpy_services.update.service import UPDATE, UpdateConfig
from dofpy_services.update.worker import CampaignWorker
from dofpy_services.version import VERSION_CHANGES, VERSION_QUERY, VERSION_REPORT
from dofpy_services.version.service import VERSION, VersionConfig
from tests.device.test_device_run import KEYS, NEW, OLD, RESCUE, publish
from tests.image.signing_fixtures import DEVICE_CLASS, VENDOR, make_root, sign_root
from tests.services.test_daemon_runner import Daemon, running
from tests.services.test_version_daemon import cli, with_authenticator
from tests.update.campaign_fixtures import SERVICE_KEY, full_approvals, make_spec, opened

DOMAIN = "example.org"
CLASS_NAME = "sensor"
FIRMWARE = Firmware(OLD, RESCUE, 64_000, 8_000)
NEW_DIGEST = hashlib.sha256(NEW).digest()


@dataclass
class World:
    tmp_path: Path
    services: FleetServices
    devices: list[EnrolledDevice]
    trust_root: TrustRoot
    root_file: Path
    campaigns: str
    versions: str
    service_key: Path
    spec: CampaignSpec
    authenticator: tuple[str, int]
    updates: list[Daemon] = dataclasses.field(default_factory=list)
    """The Update daemons, in the order of the services' addresses."""
    update_config: Callable[[str, int], UpdateConfig] | None = None
    """Another Update daemon's settings: its owner, its UDP port (0: any)."""

    def start_campaign(self) -> None:
        """``dofpy update campaign start`` (blocking): approvals checked, the
        population resolved from the Version registry."""
        status = main(
            [
                "update", "campaign", "start", self.spec.name, "--db", self.campaigns,
                "--service-key", str(self.service_key), "--trust-root", str(self.root_file),
                "--version-db", self.versions,
            ]
        )  # fmt: skip
        assert status == 0

    def campaign_settled(self) -> bool:
        with opened(self.campaigns) as db:
            state = db.read(lambda tx: cs.load_campaign(tx, self.spec.name)).state
        return state in (CampaignState.COMPLETED, CampaignState.HALTED, CampaignState.STOPPED)


def _enrol_services(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> str:
    db = str(tmp_path / "as.db")
    node = ["--db", db, "--domain", DOMAIN]
    cli(capsys, "authenticator", "init-domain", "--db", db, DOMAIN)
    for name in ("as", "version", "image", "update"):
        cred = str(tmp_path / f"{name}.cred")
        cli(capsys, "authenticator", "add-node", *node, f"{name}@{DOMAIN}",
            "--credentials-out", cred)  # fmt: skip
    grants = {
        f"version@{DOMAIN}": (VERSION_REPORT.iid, VERSION_QUERY.iid, VERSION_CHANGES.iid),
        f"image@{DOMAIN}": (IMAGE_INTERFACE.iid, TRANSFER_IID),
        f"update@{DOMAIN}": (UPDATE_DEVICE.iid,),
    }
    for name, iids in grants.items():
        for iid in iids:
            cli(capsys, "authenticator", "grant", *node, name, "--actions", "p",
                "--interface", str(iid))  # fmt: skip
    return db


def _campaign(
    campaigns: str, manifest_digest: bytes, **changes: object
) -> tuple[str, CampaignSpec]:
    wall = int(time.time())
    spec = make_spec(
        terms={
            "manifest_digest": manifest_digest,
            "population": {"class": CLASS_NAME, "not-version": "2.0"},
            "start": wall - 60,
            "deadline": wall + 86_400,
        }
    )
    settings: dict[str, object] = {
        "image_size": len(NEW),
        "image_sequence": 20,
        "image_digest": NEW_DIGEST,
        "canary_share": 0.4,
        "success_threshold": 0.5,
        "failure_threshold": 0.5,
    }
    spec = dataclasses.replace(spec, **{**settings, **changes})  # type: ignore[arg-type]
    with opened(campaigns) as db:
        worker = CampaignWorker(db, SERVICE_KEY, "operator")
        worker.create(spec, now=wall, actor="operator")
        for signed in full_approvals(spec.terms):
            worker.approve(spec.name, signed, make_root(KEYS), now=wall, actor="operator")
    return campaigns, spec


@asynccontextmanager
async def world(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    devices: int,
    *,
    step_interval: float = 0.05,
    campaign_store: str | None = None,
    updates: int = 1,
    **campaign: object,
) -> AsyncIterator[World]:
    """Everything running; the campaign created and approved, not started.
    ``campaign_store``: a PostgreSQL URL (a fresh schema) instead of a SQLite
    file; ``updates``: how many Update daemons share it."""
    if updates > 1 and campaign_store is None:
        raise ValueError("several Update daemons share a PostgreSQL campaign store")
    auth_db = _enrol_services(tmp_path, capsys)
    manifest_digest = publish(tmp_path)
    root_file = tmp_path / "root.cose"
    root_file.write_bytes(
        sign_root(make_root(KEYS), (KEYS.m1, Party.MANUFACTURER), (KEYS.m2, Party.MANUFACTURER))
    )
    trust_root = load_trust_root(str(root_file), time.time())
    campaigns, spec = await trio.to_thread.run_sync(
        lambda: _campaign(
            campaign_store or str(tmp_path / "campaigns.db"), manifest_digest, **campaign
        )
    )
    service_key = tmp_path / "update.key"
    write_private_key(str(service_key), SERVICE_KEY)
    versions = str(tmp_path / "version.db")
    settings = AuthenticatorConfig(
        listen=("127.0.0.1", 0), db=auth_db, credentials=str(tmp_path / "as.cred")
    )
    async with running(AUTHENTICATOR, settings) as authenticator:
        at = authenticator.udp

        def cred(name: str) -> str:
            return str(with_authenticator(tmp_path, name, at))

        def enrol() -> list[EnrolledDevice]:
            with opened(campaigns) as db:
                store = open_store(auth_db)
                try:
                    return enrol_fleet(
                        store, db, domain=parse_domain(DOMAIN), domain_name=DOMAIN,
                        count=devices, directory=tmp_path / "fleet", firmware=FIRMWARE,
                        authenticator=at,
                    )  # fmt: skip
                finally:
                    store.close()

        fleet = await trio.to_thread.run_sync(enrol)
        async with (
            running(
                VERSION,
                VersionConfig(listen=("127.0.0.1", 0), db=versions, credentials=cred("version")),
            ) as version,
            running(
                IMAGE,
                ImageConfig(
                    listen=("127.0.0.1", 0),
                    credentials=cred("image"),
                    store=str(tmp_path / "images"),
                ),
            ) as image,
            AsyncExitStack() as stack,
        ):

            def update_config(owner: str, port: int) -> UpdateConfig:
                return UpdateConfig(
                    listen=("127.0.0.1", port),
                    db=campaigns,
                    service_key=str(service_key),
                    version_db=versions,
                    step_interval=step_interval,
                    lease=5.0,
                    owner=owner,
                    credentials=cred("update"),
                )

            daemons = [
                await stack.enter_async_context(
                    running(UPDATE, update_config(f"update-{number}", 0))
                )
                for number in range(1, updates + 1)
            ]
            services = FleetServices(
                ("127.0.0.1", version.udp[1]),
                tuple(("127.0.0.1", d.udp[1]) for d in daemons),
                (("127.0.0.1", image.udp[1]),),
                OID(3, f"version@{DOMAIN}".encode()),
                OID(3, f"update@{DOMAIN}".encode()),
            )
            yield World(
                tmp_path, services, fleet, trust_root, root_file, campaigns, versions,
                service_key, spec, at, daemons, update_config,
            )  # fmt: skip
            for daemon in (*daemons, image, version):
                if not daemon.done.is_set():
                    await daemon.signals.send(15)
        await authenticator.signals.send(15)


__all__ = ["CLASS_NAME", "DEVICE_CLASS", "NEW_DIGEST", "VENDOR", "World", "world"]
