"""Test set-up: 8 simulated CPU devices, so sharding is exercised on every run.

XLA_FLAGS must be set before JAX starts, hence here and not in a fixture. Derived files
(the embedded digits as .npz, the domain feature net) are cached in one directory per
session unless LSDM_JAX_CACHE names one: the feature net is then trained once for every
test that needs it, the subprocesses' included, and never read from or written to the
user's cache.
"""

import os

_flags = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
if "xla_backend_optimization_level" not in _flags:
  # Most of a test's time is compiling small programs; LLVM's cheapest level compiles them
  # faster and computes the same (users' runs keep XLA's default).
  _flags += " --xla_backend_optimization_level=0"
os.environ["XLA_FLAGS"] = _flags.strip()
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


@pytest.fixture(scope="session", autouse=True)
def compilation_cache(tmp_path_factory):
  """A persistent XLA compilation cache for the session: tests that build the same program
  (the tiny config's steps, for instance, in several pipelines) compile it once."""
  if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
    yield
    return
  jax.config.update("jax_compilation_cache_dir", str(tmp_path_factory.mktemp("xla_cache")))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  yield
  jax.config.update("jax_compilation_cache_dir", None)


@pytest.fixture(scope="session", autouse=True)
def lsdm_cache(tmp_path_factory):
  """The session's LSDM_JAX_CACHE (inherited by every subprocess and notebook kernel)."""
  if os.environ.get("LSDM_JAX_CACHE"):
    yield os.environ["LSDM_JAX_CACHE"]
    return
  path = tmp_path_factory.mktemp("lsdm_jax_cache")
  os.environ["LSDM_JAX_CACHE"] = str(path)
  yield str(path)
  del os.environ["LSDM_JAX_CACHE"]


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
  """One class-conditional run of experiments/configs/test.py, metrics included.

  Shared by the tests that only read a finished run: copy the directory before changing it.
  Returns (config, workdir, metrics).
  """
  from experiments.configs import test as test_config
  from lsdm_jax import train

  workdir = tmp_path_factory.mktemp("tiny_run")
  config = test_config.get_config()
  metrics = train.train_and_evaluate(config, workdir)
  return config, workdir, metrics


@pytest.fixture(scope="session")
def lpips_weights(tmp_path_factory):
  """An LPIPS (VGG) weights file in the exported format, with random weights (the real ones
  come from the lpips package; the parity test compares the two implementations)."""
  import numpy as np

  from lsdm_jax.metrics.lpips import random_state_dict

  path = tmp_path_factory.mktemp("lpips") / "lpips_vgg.npz"
  np.savez(path, **random_state_dict(0))
  return path


@pytest.fixture(scope="session")
def inception_weights(tmp_path_factory):
  """A FID Inception weights file in pytorch-fid's exported format, with random weights
  (about 100 MB; the parity tests compare the network with pytorch-fid's)."""
  import numpy as np

  from lsdm_jax.metrics.inception import random_state_dict

  path = tmp_path_factory.mktemp("inception") / "pt_inception_random.npz"
  np.savez(path, **random_state_dict(0))
  return path
