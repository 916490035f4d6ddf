"""The Authenticator: CLI round trip on a temporary database, and a served AS
answering a TRP Request Session over 127.0.0.1; both on SQLite and on
PostgreSQL (``db_location``, see conftest.py)."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest
import trio

from dofpy.security.authenticator import TicketRole, open_session_ticket
from dofpy.security.identity import Domain
from dofpy.wire.dpp import AppId, DppPacket, OpIdType, decode_frame_untrusted, encode_frame
from dofpy.wire.oid import IID, OID
from dofpy.wire.permissions import Action, BindingPermission, PermissionSet
from dofpy.wire.security import InitiatorBlock, KeyRequest, SecurityIdentity
from dofpy.wire.trp import (
    RequestSessionCommand,
    RequestSessionResponse,
    TrpError,
    TrpReject,
    decode_trp_untrusted,
    encode_trp,
)
from dofpy_services.authenticator import open_store, serve
from dofpy_services.authenticator.store import is_postgres_url
from dofpy_services.cli import main

DOMAIN = OID(6, b"example.org")
DEVICE = OID(3, b"device@example.org")
CLIENT = OID(3, b"client@example.org")


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(["authenticator", *argv])
    out, err = capsys.readouterr()
    return status, out, err


def enrol(db: Path | str, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "init-domain", "--db", str(db), "example.org")[0] == 0
    for name in ("device@example.org", "client@example.org"):
        assert run(capsys, "add-node", "--db", str(db), "--domain", "example.org", name)[0] == 0
    status, out, _ = run(
        capsys,
        "grant",
        "--db",
        str(db),
        "--domain",
        "[6:example.org]",
        "client@example.org",
        "--actions",
        "rs",
        "--object",
        "*",
        "--interface",
        "[1:{01}]",
    )
    assert status == 0 and "rs * [{01}:{01}]" in out


def test_cli_round_trip(db_location: str, capsys: pytest.CaptureFixture[str]) -> None:
    db = db_location
    enrol(db, capsys)
    if not is_postgres_url(db):
        assert (Path(db).stat().st_mode & 0o777) == 0o600
    db_arg = ["--db", str(db), "--domain", "example.org"]
    assert (
        run(
            capsys,
            "grant",
            *db_arg,
            "device@example.org",
            "--actions",
            "p",
            "--object",
            "device@example.org",
        )[0]
        == 0
    )
    assert (
        run(
            capsys, "grant", *db_arg, "device@example.org", "--actions", "p", "--object", "class:9"
        )[0]
        == 0
    )
    status, out, _ = run(capsys, "list", "--db", str(db))
    assert status == 0
    assert "[{03}:client@example.org] domain=[{06}:example.org] active generation=0" in out
    assert "    p [{03}:device@example.org] *" in out and "    p class:9 *" in out

    # The secret add-node printed is the HKDF derivation from the stored master key.
    with open_store(db) as store:
        secret = store.domain(DOMAIN).credential_for(CLIENT).secret
    status, out, _ = run(capsys, "rotate", *db_arg, "client@example.org")
    assert status == 0 and "generation 1" in out and secret.hex() not in out
    status, out, _ = run(capsys, "revoke", *db_arg, "device@example.org", "--reason", "stolen")
    assert status == 0
    status, out, _ = run(capsys, "list", "--db", str(db), "--domain", "example.org")
    assert "[{03}:device@example.org] domain=[{06}:example.org] revoked" in out
    assert "generation=1" in out

    with open_store(db) as store:
        record = store.lookup(DOMAIN, DEVICE)
        assert record is not None and record.revoked
        events = [entry.event for entry in store.audit_log()]
        assert events[:3] == ["init-domain", "add-node", "add-node"]
        assert events[-2:] == ["rotate", "revoke"]
        assert not store.try_tamper_audit()
        assert len(store.audit_log()) == len(events)


@pytest.mark.parametrize(
    ("argv", "status", "message"),
    [
        (["add-node", "--db", "{db}", "--domain", "nowhere.org", "x"], 1, "unknown domain"),
        (
            ["add-node", "--db", "{db}", "--domain", "example.org", "device@example.org"],
            1,
            "already enrolled",
        ),
        (
            ["grant", "--db", "{db}", "--domain", "example.org", "ghost", "--actions", "r"],
            1,
            "not enrolled",
        ),
        (
            ["grant", "--db", "{db}", "--domain", "example.org", "device@example.org"],
            2,
            "needs --actions",
        ),
        (
            [
                "grant",
                "--db",
                "{db}",
                "--domain",
                "example.org",
                "device@example.org",
                "--actions",
                "rq",
            ],
            2,
            "--actions 'rq': unknown action letter 'q'",
        ),
        (["init-domain", "--db", "{db}", "example.org"], 1, "already exists"),
        (["list", "--db", "{missing}"], 1, "no database"),
        (["serve", "--db", "{db}", "--listen", "nonsense"], 2, "HOST:PORT"),
        (
            ["add-node", "--db", "{db}", "--domain", "[6:bad", "x"],
            2,
            "argument --domain: '[6:bad'",
        ),
    ],
)
def test_cli_errors_are_clear(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    status: int,
    message: str,
) -> None:
    db = tmp_path / "as.db"
    enrol(db, capsys)
    filled = [a.format(db=db, missing=tmp_path / "missing.db") for a in argv]
    exit_status, _, err = run(capsys, *filled)
    assert (exit_status, err.count("\n")) == (status, 1)
    assert err.startswith("dofpy: error:") and message in err


def request(initiator: OID) -> RequestSessionCommand:
    asks = PermissionSet((BindingPermission(Action.READ, OID(0), IID(1, b"\x01")),))
    return RequestSessionCommand(
        DOMAIN,
        KeyRequest(SecurityIdentity(DEVICE), bytes(16)),
        InitiatorBlock(KeyRequest(SecurityIdentity(initiator), b"n", asks), desired_duration=30),
    )


async def exchange(address: tuple[str, int], command: RequestSessionCommand, op: int) -> bytes:
    frame = encode_frame(
        DppPacket(
            app_id=AppId.TRP,
            payload=encode_trp(command),
            op_id_type=OpIdType.IMPLIED_SENDER,
            op_count=op,
        )
    )
    sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
    with sock:
        await sock.bind(("127.0.0.1", 0))
        await sock.sendto(frame, address)
        with trio.fail_after(10):
            data, _ = await sock.recvfrom(65536)
    return data


async def test_served_authenticator_answers_over_udp(
    db_location: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = db_location
    keylog = tmp_path / "keys.log"
    enrol(db, capsys)
    async with trio.open_nursery() as nursery:
        # TRP in the clear, chosen explicitly (the wire exchange under test).
        address = await nursery.start(
            partial(serve, sealed_only=False), ("127.0.0.1", 0), db, keylog
        )
        _, packet = decode_frame_untrusted(await exchange(address, request(CLIENT), 7))
        _, refused = decode_frame_untrusted(
            await exchange(address, request(OID(3, b"nobody@example.org")), 8)
        )
        nursery.cancel_scope.cancel()

    assert packet.is_response and packet.op_count == 7 and packet.app_id == AppId.TRP
    response = decode_trp_untrusted(packet.payload, is_response=True)
    assert isinstance(response, RequestSessionResponse)
    with open_store(db) as store:
        master = store.domain(DOMAIN).master_key
        events = [entry.event for entry in store.audit_log()]
    client_secret = Domain(DOMAIN, master).credential_for(CLIENT).secret
    key = open_session_ticket(
        response.initiator_ticket,
        client_secret,
        TicketRole.INITIATOR,
        request(CLIENT),
        response.authenticator,
    )
    assert keylog.read_text().startswith(f"DOF_SESSION_KEY {key.hex()} initiator=")
    assert decode_trp_untrusted(refused.payload, is_response=True) == TrpReject(
        TrpError.UNKNOWN_INITIATOR
    )
    assert events[-3:] == ["serve", "trp-granted", "trp-refused"]


def test_cli_on_postgres_hides_the_password(
    postgres_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Trust authentication ignores the password; the CLI must not print it.
    user, _, rest = postgres_url.removeprefix("postgresql://").partition("@")
    with_password = f"postgresql://{user}:hunter2@{rest}"
    status, out, _ = run(capsys, "init-domain", "--db", with_password, "example.org")
    assert status == 0 and "hunter2" not in out and f"{user}:***@" in out
    status, out, _ = run(capsys, "list", "--db", postgres_url)
    assert status == 0 and out == ""


def test_cli_on_unreachable_postgres_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = run(
        capsys, "list", "--db", "postgresql://nobody@127.0.0.1:1/test?connect_timeout=2"
    )
    assert status == 1 and err.startswith("dofpy: error: cannot connect to PostgreSQL")


async def test_authenticator_refuses_trp_in_the_clear_by_default_and_audits_only_the_refusal(
    db_location: str, capsys: pytest.CaptureFixture[str]
) -> None:
    db = db_location
    enrol(db, capsys)
    assert run(capsys, "add-node", "--db", db, "--domain", "example.org", "as@example.org")[0] == 0
    own = (DOMAIN, OID(3, b"as@example.org"))
    async with trio.open_nursery() as nursery:
        address = await nursery.start(partial(serve, identity=own), ("127.0.0.1", 0), db)
        # The attack: ask in the clear about an enrolled node, a stranger and garbage.
        answers = [
            await exchange(address, request(CLIENT), 9),
            await exchange(address, request(OID(3, b"nobody@example.org")), 10),
        ]
        # The refusals' audit lines are written off the receive path: wait for
        # them (bounded; the pacing is not an assertion).
        for _ in range(200):
            if len(await trio.to_thread.run_sync(clear_refusals, db)) >= 2:
                break
            await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    payloads = [decode_frame_untrusted(answer)[1].payload for answer in answers]
    # One constant answer whatever is asked: nothing learnt of who is enrolled.
    assert payloads[0] == payloads[1]
    assert decode_trp_untrusted(payloads[0], is_response=True) == TrpReject(TrpError.ACCESS_DENIED)
    with open_store(db) as store:
        events = [entry.event for entry in store.audit_log()]
    # Nothing decided (no grant or refusal of a node); each clear command is
    # audited as such, naming its source and the fix, never what it asked.
    assert not any(e in ("trp-granted", "trp-refused") for e in events)
    refusals = clear_refusals(db)
    assert len(refusals) == 2
    assert all("peer=127.0.0.1:" in r and "seal_authenticator" in r for r in refusals)
    assert not any("nobody" in r or "client" in r for r in refusals)


def clear_refusals(db: str) -> list[str]:
    with open_store(db) as store:
        return [e.detail for e in store.audit_log() if e.event == "trp-clear-refused"]


def test_cli_serve_checks_its_sealing_options(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = str(tmp_path / "as.db")
    enrol(db, capsys)
    status, _, err = run(capsys, "serve", "--db", db, "--identity", "as@example.org")
    assert status == 2 and "--identity needs --domain" in err
    # Sealed only is the default: serving without an identity needs the explicit choice.
    for argv in (("serve", "--db", db), ("serve", "--db", db, "--sealed-only")):
        status, _, err = run(capsys, *argv)
        assert status == 2 and "needs its own identity" in err and "--sealed-only false" in err
