"""Structured logs: one event per line, as text or as JSON objects.

A daemon logs events, not sentences: ``log_event(logger, "trp-granted",
peer="10.0.0.7:3567", initiator=...)``. With ``--log-format json`` each line is
one JSON object with ``ts``, ``level``, ``event``, ``service`` and the event's
fields; with ``text`` the same as ``ts level service event key=value ...``.

No secret reaches a log: :class:`RedactingFilter` (installed by
:func:`configure_logging`) replaces the value of every field whose name says it
is a secret (``secret``, ``password``, ``key``, ``token``...) and the password
of every URL, in the fields and in the message.
"""

from __future__ import annotations

import datetime
import json
import logging
import re
import sys
from collections.abc import Mapping
from typing import Any, TextIO

__all__ = [
    "JsonFormatter",
    "RedactingFilter",
    "TextFormatter",
    "configure_logging",
    "log_event",
]

_FIELDS = "dofpy_fields"
_EVENT = "dofpy_event"
REDACTED = "***"
_SECRET_NAME = re.compile(r"secret|password|passwd|token|(^|_)key($|_)|master", re.IGNORECASE)
_URL_PASSWORD = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:/@\s]*):[^@/\s]*@", re.I)


def log_event(
    logger: logging.Logger, event: str, level: int = logging.INFO, /, **fields: Any
) -> None:
    """Log ``event`` with ``fields`` (names and values; values made text)."""
    if logger.isEnabledFor(level):
        logger.log(level, event, extra={_EVENT: event, _FIELDS: fields})


def _redact_text(text: str) -> str:
    return _URL_PASSWORD.sub(lambda m: f"{m['scheme']}{m['user']}:{REDACTED}@", text)


class RedactingFilter(logging.Filter):
    """Masks secrets in a record: fields named like a secret, URL passwords."""

    def filter(self, record: logging.LogRecord) -> bool:
        fields: Mapping[str, Any] | None = getattr(record, _FIELDS, None)
        if fields:
            setattr(
                record,
                _FIELDS,
                {
                    name: REDACTED
                    if _SECRET_NAME.search(name)
                    else _redact_text(value)
                    if isinstance(value, str)
                    else value
                    for name, value in fields.items()
                },
            )
        message = record.getMessage()
        redacted = _redact_text(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


def _event_of(record: logging.LogRecord) -> tuple[str, Mapping[str, Any]]:
    event = getattr(record, _EVENT, None)
    fields: Mapping[str, Any] = getattr(record, _FIELDS, None) or {}
    if event is None:
        # A plain log call (the core's loggers): the message is the event.
        return record.getMessage(), fields
    return str(event), fields


def _timestamp(record: logging.LogRecord) -> str:
    moment = datetime.datetime.fromtimestamp(record.created, datetime.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return str(value)


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ``ts``, ``level``, ``event``, ``service``, fields."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self._service = service

    def format(self, record: logging.LogRecord) -> str:
        event, fields = _event_of(record)
        line: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname.lower(),
            "event": event,
            "service": self._service,
        }
        if record.name and not record.name.startswith("dofpy.daemon"):
            line["logger"] = record.name
        for name, value in fields.items():
            line.setdefault(name, _plain(value))
        if record.exc_info:
            line["error"] = _redact_text(self.formatException(record.exc_info))
        return json.dumps(line, separators=(",", ":"), ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """``ts level service event key=value ...``, one line an event."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self._service = service

    def format(self, record: logging.LogRecord) -> str:
        event, fields = _event_of(record)
        parts = [_timestamp(record), record.levelname.lower(), self._service, event]
        for name, value in fields.items():
            text = str(_plain(value))
            parts.append(f"{name}={json.dumps(text) if (' ' in text or not text) else text}")
        line = " ".join(parts)
        if record.exc_info:
            # One event a line: the traceback's lines are joined.
            trace = _redact_text(self.formatException(record.exc_info))
            line += " error=" + json.dumps(trace)
        return line


def configure_logging(
    service: str, log_format: str = "text", level: str = "info", stream: TextIO | None = None
) -> logging.Handler:
    """Send every ``dofpy*`` log to ``stream`` (stderr) in ``log_format``
    (``text`` or ``json``) from ``level`` up, secrets redacted; returns the
    handler (remove it from the ``dofpy`` logger to undo)."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter(service) if log_format == "json" else TextFormatter(service))
    handler.addFilter(RedactingFilter())
    for name in ("dofpy", "dofpy_services"):
        root = logging.getLogger(name)
        for old in [h for h in root.handlers if getattr(h, "dofpy_daemon", False)]:
            root.removeHandler(old)
        handler.dofpy_daemon = True  # type: ignore[attr-defined]
        root.addHandler(handler)
        root.setLevel(level.upper())
        root.propagate = False
    return handler
