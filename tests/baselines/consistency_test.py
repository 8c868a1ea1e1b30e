"""Consistency distillation: one-step samples of a toy conditional law, seeded, checked."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from lsdm_jax.baselines import consistency as cm
from lsdm_jax.baselines import latent_diffusion as ld
from lsdm_jax.errors import ConfigError

from .conftest import section

# Class k of the toy law is N(CENTRES[k], 0.5² I) in 2-d.
CENTRES = np.array([[-3.0, 0.0], [3.0, 1.0], [0.0, -3.0]], np.float32)
STD = 0.5


def _toy(n: int, seed: int = 0):
  rng = np.random.default_rng(seed)
  x = (np.arange(n) % 3).astype(np.int32)
  return x, (CENTRES[x] + STD * rng.normal(size=(n, 2))).astype(np.float32)


def _stats(z, x):
  z = np.asarray(z)
  mean = np.stack([z[x == k].mean(0) for k in range(3)])
  std = np.stack([z[x == k].std(0) for k in range(3)])
  return np.abs(mean - CENTRES).max(), np.abs(np.log(std / STD)).max()


@pytest.fixture(scope="module")
def distilled():
  x, z = _toy(3000)
  teacher_cfg = section(
    "latent_diffusion",
    steps=600,
    width=64,
    depth=2,
    cond_features=32,
    time_features=32,
    learning_rate=2e-3,
  )
  teacher, _ = ld.LatentDiffusion.fit(x, z, cond_kind="label", num_classes=3, config=teacher_cfg)
  config = section("consistency", steps=600, learning_rate=5e-4, grid_steps=20, steps_per_call=100)
  student, history = cm.ConsistencyModel.distill(teacher, x, z, config=config, seed=0)
  return teacher, student, history


def test_one_step_samples_match_the_law_where_one_teacher_step_cannot(distilled):
  teacher, student, history = distilled
  assert np.all(np.isfinite(history["loss"]))
  labels = np.repeat(np.arange(3, dtype=np.int32), 1000)
  key = jax.random.key(1)
  mean_err, log_std_err = _stats(student.sample(labels, key, 1), labels)
  assert mean_err < 0.25
  assert log_std_err < 0.35
  # One DDIM step of the teacher lands on the class mean: its spread is far too small.
  _, teacher_log_std_err = _stats(teacher.sample(labels, key, 1), labels)
  assert teacher_log_std_err > 1.0
  two = _stats(student.sample(labels, key, 2), labels)
  assert two[0] < 0.25 and two[1] < 0.35


def test_sampling_is_seeded_and_shaped(distilled):
  _, student, _ = distilled
  labels = np.array([0, 1, 2, 2], np.int32)
  a = student.sample(labels, jax.random.key(3), 2)
  b = student.sample(labels, jax.random.key(3), 2)
  c = student.sample(labels, jax.random.key(4), 2)
  assert a.shape == (4, 2)
  np.testing.assert_array_equal(a, b)
  assert not np.allclose(a, c)
  with pytest.raises(ConfigError):
    student.sample(labels, jax.random.key(3), 0)


@pytest.mark.parametrize(
  "field,value", [("steps", 0), ("target_decay", 1.0), ("restart_logsnr", 20.0)]
)
def test_invalid_config_raises(distilled, field, value):
  teacher = distilled[0]
  x, z = _toy(8)
  with pytest.raises(ConfigError, match=f"consistency.{field}={value!r} must be"):
    cm.ConsistencyModel.distill(teacher, x, z, config=section("consistency", **{field: value}))


def test_distillation_is_seeded(distilled):
  teacher = distilled[0]
  x, z = _toy(64)
  config = section("consistency", steps=7, batch_size=16, grid_steps=6, steps_per_call=5)
  (a, ha), (b, _) = (cm.ConsistencyModel.distill(teacher, x, z, config=config) for _ in range(2))
  np.testing.assert_array_equal(ha["step"], [5, 7])  # The last call is shorter.
  jax.tree.map(np.testing.assert_array_equal, a.params, b.params)
