"""``dofpy update campaign create|approve|start|pause|resume|stop|cancel|
status|list`` and ``dofpy update report NAME --db`` on a campaign store, with
the population resolved from a Version registry, as an operator runs them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dofpy_services.store import open_database_sync
from dofpy_services.update import campaign_store as cs
from dofpy_services.update.audit import verify_trail
from dofpy_services.version.store import open_version_store
from tests.services.version_helpers import fleet
from tests.update.test_update_cli import SERVICE, approve, make_terms, run, workdir

__all__ = ["workdir"]  # the fixture, shared with the offline commands' tests


def test_a_campaign_from_create_to_report(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with open_version_store(str(workdir / "version.db")) as store:
        fleet(store, 30)  # 10 sensors not on 2.0
    make_terms(capsys)
    signing = ["--db", "c.db", "--service-key", "update.key"]
    code, out, err = run(
        capsys, "update", "campaign", "create", "terms.json", *signing,
        "--intended-version", "2.0", "--image-size", "1000", "--window", "01:00-04:00",
    )  # fmt: skip
    assert code == 0 and "campaign spring created" in out, err
    start = ["update", "campaign", "start", "spring", *signing, "--trust-root", "root.cbor",
             "--version-db", "version.db"]  # fmt: skip
    code, out, err = run(capsys, *start)
    assert code == 1 and "may not start" in err and "manufacturer: 0 of 1" in out
    assert approve(capsys, "m1.key", "manufacturer", "m1.approval") == 0
    assert approve(capsys, "sp.key", "operator", "sp.approval") == 0
    assert approve(capsys, "op.key", "operator", "op.approval") == 0
    keep = ["update", "campaign", "approve", "spring", *signing, "--trust-root", "root.cbor"]
    # The service provider's key signing as the operator is not kept.
    code, _, err = run(capsys, *keep, "--approval", "sp.approval")
    assert code == 1 and "not counted" in err
    code, out, err = run(capsys, *keep, "--approval", "m1.approval", "--approval", "op.approval")
    assert code == 0 and "kept (2 approvals)" in out, err
    code, out, err = run(capsys, *start)
    assert code == 0 and "started: 10 devices" in out, err
    for command, state in (("pause", "paused"), ("resume", "running"), ("stop", "stopping")):
        code, out, err = run(capsys, "update", "campaign", command, "spring", *signing)
        assert code == 0 and state in out, err
    code, _, err = run(capsys, "update", "campaign", "resume", "spring", *signing)
    assert code == 1 and "cannot resume" in err
    code, out, _ = run(capsys, "update", "campaign", "status", "spring", "--db", "c.db", "--json")
    status = json.loads(out)
    assert status["state"] == "stopping" and status["devices"] == 10
    assert status["by_state"] == {"scheduled": 10}
    code, out, _ = run(capsys, "update", "campaign", "list", "--db", "c.db")
    assert code == 0 and out.startswith("spring  stopping")
    for form in ("table", "json", "csv", "html"):
        code, out, err = run(capsys, "update", "report", "spring", "--db", "c.db", "--format", form)
        assert code == 0 and out, (form, err)
    code, out, _ = run(capsys, "update", "report", "spring", "--db", "c.db", "--format", "json")
    report = json.loads(out)
    assert report["campaign"] == "spring" and report["scheduled"] == 10
    with open_database_sync("c.db", service=cs.SERVICE, migrations=cs.MIGRATIONS) as db:
        trail = verify_trail(db.read(cs.audit_trail), SERVICE.public_key)
    assert [e.action for e in trail.entries] == [
        "create", "start-refused", "approval-refused", "approve", "approve", "start",
        "pause", "resume", "stop",
    ]  # fmt: skip
    code, out, err = run(
        capsys,
        "update",
        "audit",
        "verify",
        "c.db",
        "--db",
        "--service-key",
        "update.pub",
        "--trust-root",
        "root.cbor",
    )
    assert code == 0 and "9 entries verified" in out and "2 approvals carried" in out, err
