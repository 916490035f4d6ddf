"""The campaign store's tests run once on SQLite and once on PostgreSQL (a
fresh schema each): the same fixtures as tests/services/conftest.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from dofpy.testing.postgres import fresh_schema, require_postgres, with_options


@pytest.fixture
def postgres_url() -> Iterator[str]:
    admin = require_postgres()
    with fresh_schema(admin) as schema:
        yield with_options(admin, search_path=schema)


@pytest.fixture(params=["sqlite", "postgres"])
def db_location(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "campaigns.db")
    url: str = request.getfixturevalue("postgres_url")
    return url
