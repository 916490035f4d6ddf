"""``dofpy authenticator`` administration, strict: undo (ungrant, reinstate,
re-enrol), refusals with their exit status (1 refused or failed, 2 usage) and a
message naming the input at fault, the audit command, ``--json`` on every
listing, ``--secret-file``, ``--version`` and no database left behind by a
failed ``init-domain``. Each through ``main(argv)``, on SQLite and PostgreSQL
where the database matters (``db_location``)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import dofpy
from dofpy.wire.oid import OID
from dofpy_services.authenticator import open_store
from dofpy_services.authenticator.service import AUDIT_KEYS, LIST_KEYS
from dofpy_services.authenticator.store import AuthenticatorStore
from dofpy_services.cli import main
from tests.services.test_authenticator import CLIENT, DEVICE, DOMAIN, enrol, run


def node_args(db: str, name: str = "device@example.org") -> list[str]:
    return ["--db", db, "--domain", "example.org", name]


def secret_of(db: str, identity: OID) -> bytes:
    with open_store(db) as store:
        record = store.lookup(DOMAIN, identity)
    assert record is not None
    return record.credential.secret


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"dofpy {dofpy.__version__}\n"


# -- undo ---------------------------------------------------------------------------------


def test_ungrant_by_flags_or_by_the_listed_text(
    db_location: str, capsys: pytest.CaptureFixture[str]
) -> None:
    enrol(db_location, capsys)
    client = node_args(db_location, "client@example.org")
    assert run(capsys, "grant", *client, "--actions", "x", "--object", "class:9")[0] == 0
    status, out, _ = run(capsys, "ungrant", *client, "--actions", "sr", "--interface", "[1:{01}]")
    assert status == 0 and out == "removed from [{03}:client@example.org]: rs * [{01}:{01}]\n"
    status, out, _ = run(capsys, "ungrant", *client, "--permission", "x class:9 *")
    assert status == 0 and "x class:9 *" in out
    status, out, _ = run(capsys, "list", "--db", db_location, "--json")
    listed = {r["identity"]: r["permissions"] for r in json.loads(out)}
    assert listed["[{03}:client@example.org]"] == []
    # Gone already: refused (1), nothing audited.
    status, _, err = run(capsys, "ungrant", *client, "--permission", "x class:9 *")
    assert status == 1
    assert err == (
        "dofpy: error: [{03}:client@example.org] has no grant 'x class:9 *' in"
        " [{06}:example.org] (see its grants with 'dofpy authenticator list')\n"
    )
    with open_store(db_location) as store:
        events = [(e.event, e.permission) for e in store.audit_log()]
    assert events[-2:] == [("ungrant", "rs * [{01}:{01}]"), ("ungrant", "x class:9 *")]


def test_ungrant_removes_a_legacy_grant_the_cli_no_longer_makes(
    db_location: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from dofpy.wire.permissions import ProviderPermission  # noqa: PLC0415

    enrol(db_location, capsys)
    with open_store(db_location) as store:  # as an earlier dofpy's --provider did
        store.grant(DOMAIN, DEVICE, ProviderPermission(), 1.0)
    status, out, _ = run(capsys, "ungrant", *node_args(db_location), "--permission", "provider")
    assert status == 0 and "provider" in out
    with open_store(db_location) as store:
        assert list(store.permissions(DOMAIN, DEVICE)) == []


def test_duplicate_grant_is_refused_and_stored_once(
    db_location: str, capsys: pytest.CaptureFixture[str]
) -> None:
    enrol(db_location, capsys)
    client = node_args(db_location, "client@example.org")
    status, out, err = run(
        capsys, "grant", *client, "--actions", "sr", "--object", "*", "--interface", "[1:{01}]"
    )
    assert (status, out) == (1, "")
    assert err == (
        "dofpy: error: [{03}:client@example.org] already has the grant 'rs * [{01}:{01}]'\n"
    )
    with open_store(db_location) as store:
        assert len(store.permissions(DOMAIN, CLIENT)) == 1
        assert [e.event for e in store.audit_log()].count("grant") == 1


def test_rotate_on_a_revoked_node_is_refused_then_re_enrol_brings_it_back(
    db_location: str, capsys: pytest.CaptureFixture[str]
) -> None:
    enrol(db_location, capsys)
    device = node_args(db_location)
    old = secret_of(db_location, DEVICE)
    assert run(capsys, "revoke", *device, "--reason", "RMA")[0] == 0
    status, out, err = run(capsys, "rotate", *device)
    assert (status, out) == (1, "")
    assert "[{03}:device@example.org] is revoked in [{06}:example.org]" in err
    assert "re-enrol" in err and "reinstate" in err
    assert secret_of(db_location, DEVICE) == old  # no generation spent

    status, out, _ = run(capsys, "re-enrol", *device)
    new = secret_of(db_location, DEVICE)
    assert status == 0 and new != old
    assert out.splitlines()[:2] == [
        "re-enrolled [{03}:device@example.org] in [{06}:example.org]: generation 1",
        f"identity secret: {new.hex()}",
    ]
    status, _, err = run(capsys, "re-enrol", *device)
    assert status == 1 and "not revoked" in err and "'rotate'" in err
    status, out, _ = run(capsys, "list", "--db", db_location, "--json")
    device_record = next(r for r in json.loads(out) if r["identity"] == str(DEVICE))
    assert (device_record["status"], device_record["generation"]) == ("active", 1)


def test_reinstate_lifts_a_revocation_keeping_the_secret(
    db_location: str, capsys: pytest.CaptureFixture[str]
) -> None:
    enrol(db_location, capsys)
    device = node_args(db_location)
    old = secret_of(db_location, DEVICE)
    status, _, err = run(capsys, "reinstate", *device)
    assert status == 1 and err == (
        "dofpy: error: [{03}:device@example.org] is not revoked in [{06}:example.org]\n"
    )
    assert run(capsys, "revoke", *device)[0] == 0
    status, out, _ = run(capsys, "reinstate", *device)
    assert status == 0 and "reinstated [{03}:device@example.org]" in out
    with open_store(db_location) as store:
        record = store.lookup(DOMAIN, DEVICE)
        assert record is not None and not record.revoked and record.credential.secret == old
        assert [e.event for e in store.audit_log()][-2:] == ["revoke", "reinstate"]


# -- the --requestor / --provider / --iam grants -------------------------------------------


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--provider"], "--provider"),
        (["--requestor"], "--requestor"),
        (["--iam", "alias@example.org"], "--iam"),
        (["--provider", "--object", "*", "--interface", "[1:{01}]"], "--provider"),
        (["--actions", "r", "--requestor"], "--requestor"),
    ],
)
def test_unenforced_grants_are_refused_as_usage_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], named: str
) -> None:
    db = str(tmp_path / "as.db")
    enrol(db, capsys)
    status, out, err = run(capsys, "grant", *node_args(db), *flags)
    assert (status, out, err.count("\n")) == (2, "", 1)
    assert err.startswith(f"dofpy: error: {named}: dofpy enforces no ")
    assert "docs/security.md" in err
    with open_store(db) as store:
        assert list(store.permissions(DOMAIN, DEVICE)) == []


# -- exit status and messages ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "status", "message"),
    [
        # usage: the command line itself makes no sense (2)
        (["grant", *node_args("{db}"), "--actions", "r", "--format", "json"], 2, "unrecognized"),
        (
            ["ungrant", *node_args("{db}"), "--permission", "r * *", "--object", "*"],
            2,
            "--permission names the whole grant: drop --object",
        ),
        (["ungrant", *node_args("{db}")], 2, "ungrant needs --actions"),
        (
            ["ungrant", *node_args("{db}"), "--permission", "frobnicate"],
            2,
            "argument --permission: 'frobnicate': expected 'LETTERS OBJECT INTERFACE'",
        ),
        (
            ["grant", *node_args("{db}"), "--actions", "r", "--interface", "zz"],
            2,
            "--interface 'zz': ",
        ),
        (
            ["grant", *node_args("{db}"), "--actions", "r", "--object", "class:nine"],
            2,
            "--object 'class:nine': class 'nine' is not a number",
        ),
        (
            ["add-node", *node_args("{db}", "new@example.org"), "--max-duration", "300"],
            2,
            "argument --max-duration: '300': outside 0..255",
        ),
        (
            ["add-node", *node_args("{db}", "new@example.org"), "--max-duration", "ten"],
            2,
            "argument --max-duration: 'ten': not a whole number",
        ),
        (
            ["add-node", *node_args("{db}", "new@example.org"), "--authenticator", "h:1"],
            2,
            "--authenticator goes into a credentials file: give --credentials-out",
        ),
        (
            [
                "add-node",
                *node_args("{db}", "new@example.org"),
                "--authenticator-identity",
                "as@example.org",
            ],
            2,
            "--authenticator-identity needs --authenticator",
        ),
        (
            [
                "add-node",
                *node_args("{db}", "new@example.org"),
                "--secret-file",
                "{tmp}/s",
                "--credentials-out",
                "{tmp}/c",
            ],
            2,
            "argument --credentials-out: not allowed with argument --secret-file",
        ),
        (["add-node", *node_args("{db}", "two words")], 2, "argument identity: 'two words'"),
        (["list", "--db", "{db}", "--domain", "[6:"], 2, "argument --domain: '[6:'"),
        (["list", "--db", "{db}", "--json", "--format", "csv"], 2, "not allowed with"),
        (["audit", "--db", "{db}", "--since", "soon"], 2, "argument --since: 'soon': expected"),
        (["audit", "--db", "{db}", "--node", "[3:"], 2, "argument --node: '[3:'"),
        (["rotate", "--db", "{db}", "device@example.org"], 2, "arguments are required: --domain"),
        # runtime: the request was understood and refused or failed (1)
        (["rotate", *node_args("{db}", "ghost@example.org")], 1, "is not enrolled"),
        (["revoke", "--db", "{db}", "--domain", "other.org", "x"], 1, "is not enrolled"),
        (["audit", "--db", "{tmp}/missing.db"], 1, "--db {tmp}/missing.db: no database there"),
        (["init-domain", "--db", "{db}", "example.org"], 1, "already exists"),
        (
            [
                "add-node",
                *node_args("{db}", "new@example.org"),
                "--credentials-out",
                "{tmp}/no/such/new.cred",
            ],
            1,
            "--credentials-out {tmp}/no/such/new.cred: No such file or directory",
        ),
        (
            ["add-node", *node_args("{db}"), "--secret-file", "{tmp}/left.secret"],
            1,
            "already enrolled",
        ),
        (
            ["add-node", *node_args("{db}"), "--credentials-out", "{tmp}/left.cred"],
            1,
            "already enrolled",
        ),
    ],
)
def test_exit_status_and_message(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    status: int,
    message: str,
) -> None:
    db = str(tmp_path / "as.db")
    enrol(db, capsys)
    with open_store(db) as store:
        before = (store.nodes(), store.audit_log())
    filled = [a.format(db=db, tmp=tmp_path) for a in argv]
    exit_status, out, err = run(capsys, *filled)
    assert (exit_status, out, err.count("\n")) == (status, "", 1), err
    assert err.startswith("dofpy: error: ") and message.format(tmp=tmp_path) in err
    with open_store(db) as store:
        assert (store.nodes(), store.audit_log()) == before
    # A file made for a secret the store then refused is not left behind.
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("as.db")) == []


# -- init-domain ----------------------------------------------------------------------------


def test_failed_init_domain_leaves_no_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "as.db"
    not_hex, short, binary = tmp_path / "not-hex.key", tmp_path / "short.key", tmp_path / "bin.key"
    not_hex.write_text("zz" * 32)
    short.write_text("00" * 16)
    binary.write_bytes(b"\xff\xfe" * 32)
    for argv, status, message in (
        (["[6:"], 2, "argument domain: '[6:'"),
        (["example org"], 2, "argument domain: 'example org': a bare name has no spaces"),
        (
            ["example.org", "--master-key-file", str(not_hex)],
            1,
            f"--master-key-file {not_hex}: not hexadecimal",
        ),
        (
            ["example.org", "--master-key-file", str(short)],
            1,
            f"--master-key-file {short}: 16 bytes; a master key is 32",
        ),
        (
            ["example.org", "--master-key-file", str(binary)],
            1,
            f"--master-key-file {binary}: not hexadecimal text",
        ),
        (
            ["example.org", "--master-key-file", str(tmp_path / "none.key")],
            1,
            f"--master-key-file {tmp_path / 'none.key'}: No such file or directory",
        ),
    ):
        exit_status, out, err = run(capsys, "init-domain", "--db", str(db), *argv)
        assert (exit_status, out) == (status, ""), err
        assert message in err
        assert list(tmp_path.glob("as.db*")) == []

    # A failure once the database exists (the store refusing): removed too.
    def refuse(*_: object) -> None:
        raise OSError(28, "No space left on device", str(db))

    monkeypatch.setattr(AuthenticatorStore, "init_domain", refuse)
    exit_status, _, err = run(capsys, "init-domain", "--db", str(db), "example.org")
    assert exit_status == 1 and f"{db}: No space left on device" in err
    assert list(tmp_path.glob("as.db*")) == []
    monkeypatch.undo()

    # And list does not take the path for a database.
    exit_status, _, err = run(capsys, "list", "--db", str(db))
    assert exit_status == 1 and "no database there" in err


def test_failed_init_domain_keeps_an_existing_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = str(tmp_path / "as.db")
    enrol(db, capsys)
    exit_status, _, err = run(capsys, "init-domain", "--db", db, "example.org")
    assert exit_status == 1 and "already exists" in err
    with open_store(db) as store:  # the existing domain, its nodes intact
        assert store.domains() == [DOMAIN] and len(store.nodes()) == 2


# -- secrets to a file -----------------------------------------------------------------------


@pytest.mark.parametrize("command", ["add-node", "rotate", "re-enrol"])
def test_secret_file_is_new_and_private(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    db = str(tmp_path / "as.db")
    enrol(db, capsys)
    name = "new@example.org" if command == "add-node" else "device@example.org"
    if command == "re-enrol":
        assert run(capsys, "revoke", *node_args(db, name))[0] == 0
    path = tmp_path / "node.secret"
    status, out, _ = run(capsys, command, *node_args(db, name), "--secret-file", str(path))
    secret = secret_of(db, OID(3, name.encode()))
    assert status == 0
    assert out.splitlines()[-1] == f"identity secret written to {path} (mode 0600)"
    assert secret.hex() not in out
    assert path.read_text() == secret.hex() + "\n"
    assert (path.stat().st_mode & 0o777) == 0o600

    # Never overwritten: refused before the store changes.
    with open_store(db) as store:
        before = (store.nodes(), store.audit_log())
    if command == "re-enrol":
        assert run(capsys, "revoke", *node_args(db, name))[0] == 0
        with open_store(db) as store:
            before = (store.nodes(), store.audit_log())
    again = name if command != "add-node" else "other@example.org"
    status, out, err = run(capsys, command, *node_args(db, again), "--secret-file", str(path))
    assert (status, out) == (1, "")
    assert err == f"dofpy: error: --secret-file {path}: exists; refusing to overwrite it\n"
    assert path.read_text() == secret.hex() + "\n"
    with open_store(db) as store:
        assert (store.nodes(), store.audit_log()) == before


def test_secret_file_refuses_a_symlink_and_is_not_left_by_a_refusal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = str(tmp_path / "as.db")
    enrol(db, capsys)
    target = tmp_path / "elsewhere"
    link = tmp_path / "link.secret"
    os.symlink(target, link)
    status, _, err = run(capsys, "rotate", *node_args(db), "--secret-file", str(link))
    assert status == 1 and "exists; refusing to overwrite" in err and not target.exists()
    # The store refuses (a revoked node): the file made for its secret is removed.
    assert run(capsys, "revoke", *node_args(db))[0] == 0
    path = tmp_path / "device.secret"
    status, _, err = run(capsys, "rotate", *node_args(db), "--secret-file", str(path))
    assert status == 1 and "is revoked" in err and not path.exists()


def test_re_enrol_writes_a_credentials_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from dofpy.credentials import load_credentials  # noqa: PLC0415

    db = str(tmp_path / "as.db")
    enrol(db, capsys)
    assert run(capsys, "revoke", *node_args(db))[0] == 0
    cred = tmp_path / "device.cred"
    status, out, _ = run(
        capsys,
        "re-enrol",
        *node_args(db),
        "--credentials-out",
        str(cred),
        "--authenticator",
        "127.0.0.1:3567",
    )
    assert status == 0 and f"credentials written to {cred} (mode 0600)" in out
    loaded = load_credentials(cred)
    assert loaded.secret == secret_of(db, DEVICE) and loaded.authenticator == ("127.0.0.1", 3567)


# -- audit and --json -------------------------------------------------------------------------


def test_audit_command(db_location: str, capsys: pytest.CaptureFixture[str]) -> None:
    enrol(db_location, capsys)
    with open_store(db_location) as store:
        store.audit(
            2_000_000_000.0,
            "trp-granted",
            f"peer=127.0.0.1:9 initiator={CLIENT} responder={DEVICE} reason=granted",
        )
    status, out, _ = run(capsys, "audit", "--db", db_location)
    lines = out.splitlines()
    assert status == 0 and lines[0].split() == [
        "time",
        "event",
        "domain",
        "node",
        "permission",
        "detail",
    ]
    grant = next(line for line in lines if " grant " in line)
    assert "[{06}:example.org]" in grant and "[{03}:client@example.org]" in grant
    assert grant.rstrip().endswith("rs * [{01}:{01}]")
    assert "Permission(" not in out  # no Python reprs

    status, out, _ = run(capsys, "audit", "--db", db_location, "--json")
    entries = json.loads(out)
    assert status == 0 and all(tuple(e) == AUDIT_KEYS for e in entries)
    assert [e["event"] for e in entries] == [
        "init-domain",
        "add-node",
        "add-node",
        "grant",
        "trp-granted",
    ]
    assert entries[-1]["time"] == "2033-05-18T03:33:20Z" and entries[-1]["at"] == 2e9
    assert entries[3]["permission"] == "rs * [{01}:{01}]" and entries[3]["detail"] == ""

    status, out, _ = run(
        capsys, "audit", "--db", db_location, "--json", "--since", "2033-05-18T03:33:20Z"
    )
    assert [e["event"] for e in json.loads(out)] == ["trp-granted"]
    status, out, _ = run(capsys, "audit", "--db", db_location, "--json", "--since", "2e9")
    assert [e["event"] for e in json.loads(out)] == ["trp-granted"]
    status, out, _ = run(
        capsys, "audit", "--db", db_location, "--json", "--node", "device@example.org"
    )
    assert [e["event"] for e in json.loads(out)] == ["add-node", "trp-granted"]
    status, out, _ = run(capsys, "audit", "--db", db_location, "--format", "csv")
    assert status == 0 and out.splitlines()[0] == "time,event,domain,node,permission,detail"


def test_list_json_keys(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "as.db")
    enrol(db, capsys)
    status, out, _ = run(capsys, "list", "--db", db, "--json")
    records = json.loads(out)
    assert status == 0 and [tuple(r) for r in records] == [LIST_KEYS, LIST_KEYS]
    assert records == json.loads(run(capsys, "list", "--db", db, "--format", "json")[1])


@pytest.mark.parametrize(
    ("argv", "fault"),
    [
        (["add-node", "--db", "{db}", "--domain", "example.org", "[3:]"], "[{03}:] names no node"),
        (["add-node", "--db", "{db}", "--domain", "[6:]", "device"], "[{06}:] names no domain"),
    ],
)
def test_an_empty_identity_or_domain_is_a_usage_error(
    db_location: str, capsys: pytest.CaptureFixture[str], argv: list[str], fault: str
) -> None:
    enrol(db_location, capsys)
    status, _, err = run(capsys, *(a.replace("{db}", db_location) for a in argv))
    assert status == 2
    assert fault in err
    with open_store(db_location) as store:
        assert store.lookup(DOMAIN, OID(3)) is None
