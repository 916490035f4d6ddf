"""A PostgreSQL server for tests of the services' stores.

The server is an external tool: by default the tests look for it on
127.0.0.1:5432 (trust auth, database ``test``, user ``postgres`` or ``root``);
``DOFPY_TEST_POSTGRES_URL`` names another, and then only that one is tried.
Each test gets a fresh, empty schema of its own, dropped afterwards, and a
URL whose ``search_path`` points into it, so that tests never see each
other's tables and any number can run against one server.

    admin_url = require_postgres()            # skips (fails when CI=true) without one
    with fresh_schema(admin_url) as schema:
        store = open_store(with_options(admin_url, search_path=schema))

psycopg (the ``postgres`` extra) and pytest are imported only when used:
importing :mod:`dofpy.testing` needs neither.
"""

from __future__ import annotations

import functools
import os
import secrets
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from urllib.parse import quote

from dofpy.testing.external import unavailable

__all__ = [
    "ADMIN_URLS",
    "URL_VARIABLE",
    "candidate_urls",
    "create_schema",
    "drop_schema",
    "find_admin_url",
    "fresh_schema",
    "require_postgres",
    "with_options",
]

URL_VARIABLE = "DOFPY_TEST_POSTGRES_URL"
ADMIN_URLS = (
    "postgresql://postgres@127.0.0.1:5432/test",
    "postgresql://root@127.0.0.1:5432/test",
)
CONNECT_TIMEOUT = 3  # seconds per candidate: an absent server costs a skip, not a hang
SCHEMA_PREFIX = "dofpy_test_"


def candidate_urls(environ: Mapping[str, str] | None = None) -> Sequence[str]:
    """The admin URLs to try, in order: ``DOFPY_TEST_POSTGRES_URL`` alone when
    it is set (in ``environ``, by default the process's), else :data:`ADMIN_URLS`."""
    chosen = (os.environ if environ is None else environ).get(URL_VARIABLE)
    return (chosen,) if chosen else ADMIN_URLS


@functools.cache
def find_admin_url() -> tuple[str | None, str]:
    """The first candidate URL that connects, or ``None`` and why none did.
    Asked once per process: every test after the first gets the same answer."""
    try:
        import psycopg  # noqa: PLC0415 - optional: the ``postgres`` extra
    except ImportError:
        return None, "psycopg not installed (pip install -e '.[postgres]')"
    reasons = []
    for url in candidate_urls():
        try:
            with psycopg.connect(url, connect_timeout=CONNECT_TIMEOUT):
                return url, ""
        except psycopg.Error as exc:
            reasons.append(f"{url}: {str(exc).strip()}")
    return None, "PostgreSQL unreachable (" + "; ".join(reasons) + ")"


def require_postgres() -> str:
    """An admin URL of the test server; skips the test without one (fails
    when ``CI=true``)."""
    url, reason = find_admin_url()
    if url is None:
        unavailable(reason)
    return url


def with_options(url: str, **settings: str) -> str:
    """``url`` with run-time settings in its ``options`` parameter (libpq's
    ``-c name=value``), e.g. ``with_options(url, search_path="s1")``."""
    if not settings:
        return url
    options = "%20".join(
        f"-c{quote(name, safe='')}%3D{quote(value, safe='')}" for name, value in settings.items()
    )
    return f"{url}{'&' if '?' in url else '?'}options={options}"


def create_schema(admin_url: str) -> str:
    """Create a fresh, empty schema with a random name; its name."""
    import psycopg  # noqa: PLC0415
    from psycopg import sql  # noqa: PLC0415

    schema = SCHEMA_PREFIX + secrets.token_hex(6)
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    return schema


def drop_schema(admin_url: str, schema: str) -> None:
    """Drop ``schema`` and everything in it."""
    import psycopg  # noqa: PLC0415
    from psycopg import sql  # noqa: PLC0415

    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


@contextmanager
def fresh_schema(admin_url: str) -> Iterator[str]:
    """A fresh schema for the block's lifetime (dropped even when it fails)."""
    schema = create_schema(admin_url)
    try:
        yield schema
    finally:
        drop_schema(admin_url, schema)
