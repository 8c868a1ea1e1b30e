"""`python -m experiments.train_eval_net`: it writes where the package reads, and reproduces
the shipped net."""

import hashlib
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

from experiments import train_eval_net
from lsdm_jax.metrics import classifier

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_default_path_is_the_shipped_nets_file():
  (entry,) = [e for e in classifier.SHIPPED_NETS if e.source == "mnist5k"]
  assert train_eval_net.default_path("mnist5k") == classifier.ASSETS_DIR / entry.filename
  assert train_eval_net.default_path("mnist5k").is_file()


@pytest.mark.slow  # The full recipe: about a minute on two cores.
def test_the_command_reproduces_the_shipped_net(tmp_path, lsdm_cache):
  out = tmp_path / "net.npz"
  # XLA's default optimisation level, as the shipped net was trained (the tests lower it).
  env = {"JAX_PLATFORMS": "cpu", "PATH": "/usr/bin:/bin", "LSDM_JAX_CACHE": lsdm_cache}
  r = subprocess.run(
    [sys.executable, "-m", "experiments.train_eval_net", f"--out={out}"],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=600,
    env={**env, "PYTHONPATH": os.pathsep.join(sys.path)},
  )
  assert r.returncode == 0, r.stderr
  entry = classifier.SHIPPED_NETS[0]
  shipped, meta = classifier.read_eval_net(
    classifier.ASSETS_DIR / entry.filename, sha256=entry.sha256
  )
  retrained, new_meta = classifier.read_eval_net(out)
  assert f"sha256 {hashlib.sha256(out.read_bytes()).hexdigest()}" in r.stdout
  assert new_meta["recipe"] == meta["recipe"] and new_meta["dtype"] == meta["dtype"]
  if new_meta["trained_with"] != meta["trained_with"]:
    pytest.skip(f"shipped net trained with {meta['trained_with']}, here {new_meta['trained_with']}")
  # The same versions on a CPU: the same weights, bit for bit.
  leaves = zip(jax.tree.leaves(shipped.params), jax.tree.leaves(retrained.params), strict=True)
  assert all(np.array_equal(a, b) for a, b in leaves)
