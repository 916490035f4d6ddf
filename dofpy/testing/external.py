"""External tools a test needs (tshark, a PostgreSQL server): without one, a
test skips with a visible reason on a developer's machine and fails when
``CI=true``, so that CI never passes by skipping what it was meant to check.

pytest is imported only when a test is actually skipped or failed: importing
:mod:`dofpy.testing` never needs it.
"""

from __future__ import annotations

import os
from typing import NoReturn

__all__ = ["required_in_ci", "unavailable"]


def required_in_ci() -> bool:
    """Whether missing external tools fail tests (``CI=true``) instead of skipping them."""
    return os.environ.get("CI") == "true"


def unavailable(reason: str) -> NoReturn:
    """Skip the running test because ``reason``; fail it instead when ``CI=true``."""
    import pytest  # noqa: PLC0415 - only tests reach here; dofpy.testing must not need pytest

    if required_in_ci():
        pytest.fail(reason + " -- required when CI=true")
    pytest.skip(reason)
