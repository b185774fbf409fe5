"""Shared pytest configuration: hypothesis profile and a float64 fixture."""

from __future__ import annotations

import jax
import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "jaxbce",
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile("jaxbce")


@pytest.fixture
def x64():
    """Runs a test with ``jax_enable_x64`` on, as float64 gradient-checking scripts do."""
    with jax.enable_x64(True):
        yield
