"""Shared test configuration: hypothesis profiles.

``PYWATT_FUZZ_EXAMPLES=N`` runs every property/fuzz test with N examples
(CI uses the small default profile).
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
_long = os.environ.get("PYWATT_FUZZ_EXAMPLES")
if _long:
    settings.register_profile(
        "long",
        max_examples=int(_long),
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    settings.load_profile("long")
else:
    settings.load_profile("ci")


def pytest_collection_modifyitems(config: object, items: list[object]) -> None:
    """Every test under fuzz/ is of kind ``fuzz`` (see tests/conftest.py)."""
    import pytest

    here = os.path.dirname(os.path.abspath(__file__))
    for item in items:
        if isinstance(item, pytest.Item) and os.path.dirname(str(item.path)) == here:
            item.add_marker("fuzz")
