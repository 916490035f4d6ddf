"""Fixtures for the services' stores: a fresh PostgreSQL schema per test, and
``db_location``, which runs a test once on SQLite and once on PostgreSQL.

PostgreSQL is an external tool: the server is expected on 127.0.0.1:5432
(trust auth, database ``test``, user ``postgres`` or ``root``; or the URL in
``DOFPY_TEST_POSTGRES_URL`` alone). Without it the PostgreSQL tests skip with a
visible reason on a developer's machine and fail when ``CI=true``.
"""

from __future__ import annotations

import functools
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

ADMIN_URLS = (
    "postgresql://postgres@127.0.0.1:5432/test",
    "postgresql://root@127.0.0.1:5432/test",
)


def _unavailable(message: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(message + " -- required when CI=true")
    pytest.skip(message)


@functools.cache
def _find_admin_url() -> tuple[str | None, str]:
    """The first admin URL that connects, or ``None`` and why none did."""
    try:
        import psycopg  # noqa: PLC0415 - optional: the ``postgres`` extra
    except ImportError:
        return None, "psycopg not installed (pip install -e '.[postgres]')"
    chosen = os.environ.get("DOFPY_TEST_POSTGRES_URL")
    reasons = []
    for url in [chosen] if chosen else ADMIN_URLS:
        try:
            with psycopg.connect(url, connect_timeout=3):
                return url, ""
        except psycopg.Error as exc:
            reasons.append(f"{url}: {str(exc).strip()}")
    return None, "PostgreSQL unreachable (" + "; ".join(reasons) + ")"


def require_postgres() -> str:
    """An admin URL of the test server; skips (fails when CI=true) without one."""
    url, reason = _find_admin_url()
    if url is None:
        _unavailable(reason)
    assert url is not None
    return url


def with_options(url: str, **settings: str) -> str:
    """``url`` with run-time settings (``-c name=value``) in its ``options``."""
    options = "%20".join(f"-c{name}%3D{value}" for name, value in settings.items())
    return f"{url}{'&' if '?' in url else '?'}options={options}"


@pytest.fixture
def postgres_admin_url() -> str:
    return require_postgres()


@pytest.fixture
def postgres_schema(postgres_admin_url: str) -> Iterator[str]:
    """A fresh, empty schema in the test database, dropped afterwards."""
    import psycopg  # noqa: PLC0415
    from psycopg import sql  # noqa: PLC0415

    schema = f"dofpy_test_{secrets.token_hex(6)}"
    with psycopg.connect(postgres_admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    try:
        yield schema
    finally:
        with psycopg.connect(postgres_admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture
def postgres_url(postgres_admin_url: str, postgres_schema: str) -> str:
    """A ``postgresql://`` URL whose tables go to a fresh schema."""
    return with_options(postgres_admin_url, search_path=postgres_schema)


@pytest.fixture(params=["sqlite", "postgres"])
def db_location(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where a store lives, once per backend: a SQLite file path, then a
    PostgreSQL URL."""
    if request.param == "sqlite":
        return str(tmp_path / "as.db")
    url: str = request.getfixturevalue("postgres_url")
    return url
