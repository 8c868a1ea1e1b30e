"""A user's own images train and generate through the README's command, unchanged.

The "user" has 8x8 grayscale digits (mnist5k resized) in an npz; the command is the
README's `python -m experiments.main ... --config.data.source=npz:PATH` with the tiny
test config, run as a subprocess (killed if it hangs).
"""

import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

import lsdm_jax

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _digits_8x8(mnist5k, n=1000) -> tuple[np.ndarray, np.ndarray]:
  images = np.concatenate([mnist5k.train_images, mnist5k.test_images])[:: 5000 // n]
  labels = np.concatenate([mnist5k.train_labels, mnist5k.test_labels])[:: 5000 // n]
  small = jax.image.resize(images.astype(np.float32), (len(images), 8, 8, 1), "linear")
  return np.clip(np.rint(np.asarray(small)), 0, 255).astype(np.uint8)[..., 0], labels


@pytest.mark.slow  # npz loading and odd image sizes have fast tests in tests/data, tests/models.
def test_own_npz_of_8x8_digits_trains_and_generates(mnist5k, tmp_path):
  images, labels = _digits_8x8(mnist5k)
  assert images.shape == (1000, 8, 8) and images.dtype == np.uint8
  np.savez(tmp_path / "digits8.npz", images=images, labels=labels)
  workdir = tmp_path / "run"
  command = [
    sys.executable,
    "-m",
    "experiments.main",
    "--config=experiments/configs/test.py",
    f"--workdir={workdir}",
    f"--config.data.source=npz:{tmp_path / 'digits8.npz'}",
    "--config.eval.enabled=False",  # Metrics have their own tests; this one is about data.
  ]
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # One device: fast.
  env["XLA_FLAGS"] = "--xla_backend_optimization_level=0"  # Compiling is most of this run.
  result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, timeout=600)
  assert result.returncode == 0, result.stderr.decode(errors="replace")[-3000:]
  for name in ("samples/grid.png", "samples/reconstructions.png", "metrics.json"):
    assert (workdir / name).exists(), name
  model = lsdm_jax.load(workdir)
  samples = model.generate(np.arange(10), jax.random.key(0), n=2)
  assert samples.shape == (20, 8, 8, 1) and 0.0 <= samples.min() and samples.max() <= 1.0
