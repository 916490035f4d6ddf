"""Key-log files: created 0600, never through a link, never into a file others
can read (one opener, used by every key log of dofpy)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from dofpy.security.keylog import format_keylog_line, open_keylog, parse_keylog
from dofpy.testing.secure import CLIENT_ID, PROVIDER_ID
from dofpy.trio import open_node

KEY = bytes(range(32))
LINE = format_keylog_line(KEY, CLIENT_ID, PROVIDER_ID, 1)


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_a_new_key_log_is_created_0600_whatever_the_umask(tmp_path: Path) -> None:
    path = tmp_path / "keys.log"
    previous = os.umask(0)
    try:
        with open_keylog(path) as log:
            log.write(LINE)
    finally:
        os.umask(previous)
    assert mode_of(path) == 0o600
    # Reopened: appended to, not truncated.
    with open_keylog(path) as log:
        log.write(format_keylog_line(bytes(32), CLIENT_ID, PROVIDER_ID, 2))
    assert parse_keylog(path.read_text().splitlines()) == [KEY, bytes(32)]


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o700, 0o666])
def test_an_existing_file_others_could_read_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "keys.log"
    path.write_text("# mine\n")
    path.chmod(mode)
    with pytest.raises(PermissionError, match="wider than 0600"):
        open_keylog(path)
    assert path.read_text() == "# mine\n"  # nothing written
    assert mode_of(path) == mode  # and its mode left as it was


def test_a_symbolic_link_is_refused_and_its_target_untouched(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_text("")
    target.chmod(0o600)
    link = tmp_path / "keys.log"
    link.symlink_to(target)
    with pytest.raises(PermissionError, match="symbolic link"):
        open_keylog(link)
    assert target.read_text() == ""
    # A dangling link is refused too (no file is created at its target).
    dangling = tmp_path / "dangling.log"
    dangling.symlink_to(tmp_path / "created-through-the-link")
    with pytest.raises(PermissionError):
        open_keylog(dangling)
    assert not (tmp_path / "created-through-the-link").exists()


def test_a_fifo_or_directory_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "keys.fifo"
    os.mkfifo(fifo, 0o600)
    with pytest.raises(PermissionError, match="not a regular file"):
        open_keylog(fifo)
    with pytest.raises(OSError, match=r"[Ii]s a directory"):
        open_keylog(tmp_path)


def test_an_existing_private_file_is_appended_to(tmp_path: Path) -> None:
    path = tmp_path / "keys.log"
    path.write_text("# mine\n")
    path.chmod(0o600)
    with open_keylog(path) as log:
        log.write(LINE)
    assert path.read_text() == "# mine\n" + LINE


async def test_a_node_refuses_a_readable_key_log_before_it_binds(tmp_path: Path) -> None:
    path = tmp_path / "keys.log"
    path.write_text("")
    path.chmod(0o644)
    with pytest.raises(PermissionError, match="wider than 0600"):
        async with open_node(keylog_path=path):
            pytest.fail("the node ran with a key log others can read")
    # With a private file it runs (and keeps the file private).
    path.chmod(0o600)
    async with open_node(keylog_path=path) as node:
        assert node.local_address[1] != 0
    assert mode_of(path) == 0o600
