"""A fresh PostgreSQL schema per test for the fleet tests whose Update
daemons share one campaign store (the fixture of tests/update/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from dofpy.testing.postgres import fresh_schema, require_postgres, with_options


@pytest.fixture
def postgres_url() -> Iterator[str]:
    admin = require_postgres()
    with fresh_schema(admin) as schema:
        yield with_options(admin, search_path=schema)
