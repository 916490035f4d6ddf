"""Structured logs: one event a line, JSON objects that parse, no secret."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from dofpy_services.daemon.logs import configure_logging, log_event

SECRET = "9f" * 32


@pytest.fixture
def captured() -> Iterator[tuple[io.StringIO, list[logging.Handler]]]:
    stream = io.StringIO()
    handlers: list[logging.Handler] = []
    yield stream, handlers
    for name in ("dofpy", "dofpy_services"):
        root = logging.getLogger(name)
        for handler in handlers:
            root.removeHandler(handler)
        root.setLevel(logging.NOTSET)
        root.propagate = True


def test_json_lines_parse_and_hold_no_secret(
    captured: tuple[io.StringIO, list[logging.Handler]],
) -> None:
    stream, handlers = captured
    handlers.append(configure_logging("authenticator", "json", "info", stream))
    logger = logging.getLogger("dofpy.daemon.authenticator")
    log_event(
        logger,
        "trp-granted",
        peer="127.0.0.1:4000",
        initiator="[{03}:client@example.org]",
        secret=SECRET,
        session_key=SECRET,
        db="postgresql://dofpy:hunter2@db/auth",
    )
    log_event(logger, "drain-timeout", logging.WARNING, abandoned=2)
    logging.getLogger("dofpy.node").warning("connect to postgresql://u:hunter2@h/d failed")
    log_event(logger, "too-quiet", logging.DEBUG, x=1)
    lines = stream.getvalue().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["event"] for r in records] == [
        "trp-granted",
        "drain-timeout",
        "connect to postgresql://u:***@h/d failed",
    ]
    first = records[0]
    assert first["service"] == "authenticator" and first["level"] == "info"
    assert first["ts"].endswith("Z") and first["peer"] == "127.0.0.1:4000"
    assert first["initiator"] == "[{03}:client@example.org]"
    assert first["db"] == "postgresql://dofpy:***@db/auth"
    assert records[1]["level"] == "warning" and records[1]["abandoned"] == 2
    assert records[2]["logger"] == "dofpy.node"
    text = stream.getvalue()
    assert SECRET not in text and "hunter2" not in text


def test_text_lines_are_one_event_each(
    captured: tuple[io.StringIO, list[logging.Handler]],
) -> None:
    stream, handlers = captured
    handlers.append(configure_logging("authenticator", "text", "debug", stream))
    logger = logging.getLogger("dofpy.daemon.authenticator")
    log_event(logger, "ready", udp="127.0.0.1:5", reason="two words", password="hunter2")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logger.exception("provider failed")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    assert " info authenticator ready udp=127.0.0.1:5 " in lines[0]
    assert 'reason="two words" password=***' in lines[0] and "hunter2" not in lines[0]
    assert " error authenticator provider failed error=" in lines[1] and "boom" in lines[1]
