"""Shared test configuration: Hypothesis profiles.

``DLA_PROFILE=ci`` (the default) is fast and deterministic; ``DLA_PROFILE=thorough``
runs many more examples with a random seed that Hypothesis prints on failure.
"""

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    max_examples=20,
    deadline=None,
    derandomize=True,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "thorough",
    max_examples=300,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("DLA_PROFILE", "ci"))
