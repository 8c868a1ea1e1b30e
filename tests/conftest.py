"""Test set-up: 8 simulated CPU devices, so sharding is exercised on every run.

XLA_FLAGS must be set before JAX starts, hence here and not in a fixture.
"""

import os

os.environ["XLA_FLAGS"] = (
  os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture
def key():
  return jax.random.key(0)


@pytest.fixture(scope="session")
def mnist5k():
  from lsdm_jax.data import load_source

  return load_source("mnist5k")
