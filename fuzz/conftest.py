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
