"""Credentials files: written private and atomically, refused when unsafe or
malformed with a message naming the file and the key, and good for a real
secure session."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
import trio

from dofpy import Interface, Method, Param, Provider, ValueType, open_node
from dofpy.credentials import (
    CredentialsError,
    NodeCredentials,
    load_credentials,
    parse_address,
    write_credentials,
)
from dofpy.oap.core import OapConfig
from dofpy.testing import LocalDomain, grant, open_secure_node
from dofpy.wire.oid import OID

DOMAIN = OID(6, b"example.org")
DEVICE = OID(3, b"device@example.org")
SERVER = OID(3, b"server@example.org")
ECHO = Interface.define(
    "[1:{010000ab}]",
    "Echo",
    [Method(1, "echo", (Param("text", ValueType.TEXT),), (Param("text", ValueType.TEXT),))],
)
ECHO_OID = OID(3, b"echo@example.org")


def credentials(identity: OID = DEVICE) -> NodeCredentials:
    return NodeCredentials(DOMAIN, identity, bytes(range(32)), ("127.0.0.1", 3567), 2)


def test_written_private_and_read_back(tmp_path: Path) -> None:
    path = write_credentials(tmp_path / "device.toml", credentials())
    assert (path.stat().st_mode & 0o777) == 0o600
    assert load_credentials(path) == credentials()
    assert bytes(range(32)).hex() in path.read_text()
    # Nothing but the file is left in the folder (the temporary was renamed).
    assert [p.name for p in tmp_path.iterdir()] == ["device.toml"]


def test_ipv6_authenticator_and_no_authenticator(tmp_path: Path) -> None:
    v6 = credentials().with_authenticator(("::1", 3567))
    assert load_credentials(write_credentials(tmp_path / "a", v6)).authenticator == ("::1", 3567)
    none = credentials().with_authenticator(None)
    assert load_credentials(write_credentials(tmp_path / "b", none)).authenticator is None


def test_refuses_to_overwrite_unless_asked(tmp_path: Path) -> None:
    path = write_credentials(tmp_path / "device.toml", credentials())
    with pytest.raises(CredentialsError, match="exists"):
        write_credentials(path, credentials(SERVER))
    write_credentials(path, credentials(SERVER), overwrite=True)
    assert load_credentials(path).identity == SERVER


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o644, 0o602])
def test_refuses_a_file_others_may_read(tmp_path: Path, mode: int) -> None:
    path = write_credentials(tmp_path / "device.toml", credentials())
    os.chmod(path, mode)
    with pytest.raises(CredentialsError, match=r"readable by others .*chmod 600") as caught:
        load_credentials(path)
    assert str(path) in str(caught.value)


def test_missing_file_and_folder(tmp_path: Path) -> None:
    with pytest.raises(CredentialsError, match="no such credentials file"):
        load_credentials(tmp_path / "absent.toml")
    with pytest.raises(CredentialsError, match="not a regular file"):
        os.chmod(tmp_path, 0o700)
        load_credentials(tmp_path)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t.replace("format = 1", "format = 2"), "key 'format': expected 1"),
        (lambda t: t.replace('domain = "[{06}:example.org]"\n', ""), "key 'domain'"),
        (
            lambda t: t.replace("[{03}:device@example.org]", "device"),
            "key 'identity': expected an OID",
        ),
        (lambda t: t.replace('secret = "', 'secret = "zz'), "key 'secret': expected 64 hex"),
        (lambda t: t.replace("generation = 2", "generation = -1"), "key 'generation'"),
        (lambda t: t.replace("127.0.0.1:3567", "127.0.0.1"), "key 'authenticator': expected HOST"),
        (lambda t: t + "colour = 1\n", "unknown key 'colour'"),
        (lambda t: t + "[[[", "not a credentials file"),
    ],
)
def test_malformed_files_name_the_key(tmp_path: Path, edit: object, message: str) -> None:
    path = write_credentials(tmp_path / "device.toml", credentials())
    assert callable(edit)
    path.write_text(edit(path.read_text()))
    with pytest.raises(CredentialsError, match=message) as caught:
        load_credentials(path)
    assert str(caught.value).startswith(str(path))


def test_parse_address() -> None:
    assert parse_address("10.0.0.1:80") == ("10.0.0.1", 80)
    assert parse_address("[::1]:3567") == ("::1", 3567)
    for bad in ("host", ":80", "host:99999", "host:x"):
        with pytest.raises(ValueError, match="HOST:PORT"):
            parse_address(bad)


def test_secret_size_is_checked() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        NodeCredentials(DOMAIN, DEVICE, b"short")


async def test_a_loaded_file_joins_the_domain(tmp_path: Path) -> None:
    """A node built from a credentials file establishes a secure session and
    is served: the file holds everything a node needs."""
    domain = LocalDomain(DOMAIN, rng=random.Random(7).randbytes)
    domain.enrol(SERVER, grant("p"))
    domain.enrol(DEVICE, grant("x", interface=ECHO.iid))
    device = NodeCredentials(DOMAIN, DEVICE, domain.credential(DEVICE).secret)
    loaded = load_credentials(write_credentials(tmp_path / "device.toml", device))

    class Echo(Provider):
        def echo(self, text: str) -> str:
            return text

    with trio.fail_after(30):
        async with (
            open_secure_node(domain, SERVER) as server,
            open_node(
                config=OapConfig(node=loaded.node_config(grant("x", interface=ECHO.iid)))
            ) as client,
        ):
            server.provide(ECHO_OID, ECHO, Echo())
            assert await client.secure_session(server.local_address) == SERVER
            assert await client.invoke(server.local_address, ECHO_OID, ECHO, "echo", "hi") == (
                "hi",
            )


def test_the_authenticator_identity_is_written_read_back_and_binds_its_address(
    tmp_path: Path,
) -> None:
    expected = OID(3, b"authenticator@example.org")
    named = NodeCredentials(
        DOMAIN, DEVICE, bytes(range(32)), ("127.0.0.1", 3567), authenticator_identity=expected
    )
    path = write_credentials(tmp_path / "device.toml", named)
    assert load_credentials(path) == named
    security = named.security_config()
    assert security.peer_identities == {("127.0.0.1", 3567): expected}
    assert credentials().security_config().peer_identities == {}
    with pytest.raises(ValueError, match="needs the authenticator's address"):
        NodeCredentials(DOMAIN, DEVICE, bytes(32), None, authenticator_identity=expected)
    text = path.read_text().replace('authenticator = "127.0.0.1:3567"\n', "")
    path.write_text(text)
    with pytest.raises(CredentialsError, match="authenticator_identity"):
        load_credentials(path)
