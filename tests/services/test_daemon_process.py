"""A real daemon process: ``python -m dofpy_services.cli authenticator serve
--config FILE`` on 127.0.0.1 port 0, its own identity from a credentials file
written by ``add-node --credentials-out``; its metrics scraped over HTTP, a TRP
request answered, SIGTERM and a clean exit 0. A bad configuration: one line on
stderr and exit 2."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dofpy.credentials import load_credentials, parse_address
from dofpy.wire.dpp import AppId, DppPacket, OpIdType, decode_frame_untrusted, encode_frame
from dofpy.wire.trp import RequestSessionResponse, decode_trp_untrusted, encode_trp
from dofpy_services.authenticator.store import open_store
from dofpy_services.cli import main
from tests.services.test_authenticator import CLIENT, DOMAIN, enrol, request
from tests.services.test_daemon_runner import WAIT, samples, scrape

ROOT = Path(__file__).resolve().parents[2]
AUTHENTICATOR_ID = "as@example.org"


def dofpy(tmp_path: Path, *argv: str) -> subprocess.Popen[str]:
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    )
    return subprocess.Popen(
        [sys.executable, "-m", "dofpy_services.cli", *argv],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_file(path: Path, process: subprocess.Popen[str]) -> dict[str, str]:
    """The ready file's addresses, polled a bounded number of times."""
    for _ in range(400):
        if path.exists():
            addresses: dict[str, str] = json.loads(path.read_text())
            return addresses
        if process.poll() is not None:
            break
        time.sleep(0.05)
    process.kill()
    _, err = process.communicate(timeout=WAIT)
    pytest.fail(f"the daemon did not get ready (status {process.returncode}): {err}")


def test_add_node_writes_a_private_credentials_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = str(tmp_path / "as.db")
    enrol(db, capsys)
    out_file = tmp_path / "as.cred"
    argv = ["authenticator", "add-node", "--db", db, "--domain", "example.org", AUTHENTICATOR_ID]
    argv += ["--credentials-out", str(out_file), "--authenticator", "127.0.0.1:3567"]
    assert main(argv) == 0
    out, _ = capsys.readouterr()
    credentials = load_credentials(out_file)
    with open_store(db) as store:
        secret = store.domain(DOMAIN).credential_for(credentials.identity).secret
    assert (out_file.stat().st_mode & 0o777) == 0o600
    assert credentials.secret == secret and secret.hex() not in out
    assert credentials.authenticator == ("127.0.0.1", 3567) and credentials.domain == DOMAIN
    assert main(argv) == 1  # the file is not overwritten (nor the node enrolled twice)
    assert "refusing to overwrite" in capsys.readouterr().err


def add_own_identity(db: Path, cred: Path) -> None:
    argv = ["authenticator", "add-node", "--db", str(db), "--domain", "example.org"]
    assert main([*argv, AUTHENTICATOR_ID, "--credentials-out", str(cred)]) == 0


def trp_exchange(address: tuple[str, int]) -> bytes:
    frame = encode_frame(
        DppPacket(
            app_id=AppId.TRP,
            payload=encode_trp(request(CLIENT)),
            op_id_type=OpIdType.IMPLIED_SENDER,
            op_count=3,
        )
    )
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(WAIT)
        sock.sendto(frame, address)
        data, _ = sock.recvfrom(65536)
    return data


def test_daemon_process_serves_metrics_and_exits_cleanly_on_sigterm(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "as.db"
    enrol(db, capsys)
    cred = tmp_path / "as.cred"
    add_own_identity(db, cred)
    secret = load_credentials(cred).secret.hex()
    config = tmp_path / "auth.toml"
    config.write_text(
        'listen = "127.0.0.1:0"\nmetrics_listen = "127.0.0.1:0"\ndb = "as.db"\n'
        'credentials = "as.cred"\nlog_format = "json"\nready_file = "ready.json"\n'
        # The probe below is TRP in the clear: an explicit choice.
        "sealed_only = false\n"
    )
    process = dofpy(tmp_path, "authenticator", "serve", "--config", str(config))
    try:
        addresses = wait_for_file(tmp_path / "ready.json", process)
        _, packet = decode_frame_untrusted(trp_exchange(parse_address(addresses["udp"])))
        status, text = scrape(addresses["metrics"], "/metrics")
        ready = scrape(addresses["metrics"], "/readyz")
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=WAIT)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=WAIT)
    assert process.returncode == 0 and out == ""
    assert isinstance(
        decode_trp_untrusted(packet.payload, is_response=True), RequestSessionResponse
    )
    assert status == 200 and ready == (200, "ready")
    values = samples(text)
    assert values[("dofpy_authenticator_decisions_total", frozenset({("outcome", "granted")}))] == 1
    assert values[("dofpy_endpoint_datagrams_received_total", frozenset())] == 1
    events = [json.loads(line) for line in err.splitlines()]
    assert [e["event"] for e in events] == [
        "starting",
        "ready",
        "trp-granted",
        "stopping",
        "draining",
        "stopped",
    ]
    assert events[0]["identity"] == f"[{{03}}:{AUTHENTICATOR_ID}]"
    assert events[1]["udp"] == addresses["udp"] and events[-1]["status"] == 0
    assert secret not in err


def test_daemon_process_with_a_bad_config_says_one_line(tmp_path: Path) -> None:
    config = tmp_path / "auth.toml"
    config.write_text('db = "as.db"\nmetrics_listen = "localhost"\n')
    process = dofpy(tmp_path, "authenticator", "serve", "--config", str(config))
    out, err = process.communicate(timeout=WAIT)
    assert process.returncode == 2 and out == ""
    assert err == (
        "dofpy: error: auth.toml: key 'metrics_listen': expected HOST:PORT (\"\" for none), "
        "got 'localhost'\n"
    )


def test_daemon_process_refuses_credentials_others_may_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "as.db"
    enrol(db, capsys)
    cred = tmp_path / "as.cred"
    add_own_identity(db, cred)
    cred.chmod(0o644)
    process = dofpy(
        tmp_path,
        "authenticator",
        "serve",
        "--db",
        "as.db",
        "--credentials",
        "as.cred",
        "--listen",
        "127.0.0.1:0",
    )
    out, err = process.communicate(timeout=WAIT)
    # A runtime refusal (1), not a usage error (2).
    assert process.returncode == 1 and out == ""
    assert err == (
        "dofpy: error: as.cred: credentials are readable by others (mode 0644); "
        "run: chmod 600 as.cred\n"
    )
