"""Settings for the whole suite.

Hypothesis' ``deadline`` and ``too_slow`` health check are timing
assertions: on a loaded 2-core machine (CI, or several runs at once) they
fail tests whose logic is right. The suite asserts behaviour, never speed
(speed lives in ``benchmarks/``), so both are off everywhere.
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings

settings.register_profile(
    "dofpy",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("dofpy")
