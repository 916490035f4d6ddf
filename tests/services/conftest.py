"""Fixtures for the services' stores, on :mod:`dofpy.testing.postgres`: a fresh
PostgreSQL schema per test, and ``db_location``, which runs a test once on
SQLite and once on PostgreSQL.

PostgreSQL is an external tool: the server is expected on 127.0.0.1:5432
(trust auth, database ``test``, user ``postgres`` or ``root``; or the URL in
``DOFPY_TEST_POSTGRES_URL`` alone). Without it the PostgreSQL tests skip with a
visible reason on a developer's machine and fail when ``CI=true``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from dofpy.testing.postgres import fresh_schema, require_postgres, with_options


@pytest.fixture
def postgres_admin_url() -> str:
    return require_postgres()


@pytest.fixture
def postgres_schema(postgres_admin_url: str) -> Iterator[str]:
    """A fresh, empty schema in the test database, dropped afterwards."""
    with fresh_schema(postgres_admin_url) as schema:
        yield schema


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
