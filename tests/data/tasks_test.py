"""Tests of lsdm_jax.data.tasks."""

import numpy as np
import pytest

from lsdm_jax.data import tasks
from lsdm_jax.errors import ConfigError


def test_avg_pool_block_means():
  y = np.arange(16, dtype=np.float32).reshape(1, 4, 4, 1)
  x = tasks.avg_pool(y, 2)
  assert x.shape == (1, 2, 2, 1)
  np.testing.assert_allclose(x[0, :, :, 0], [[2.5, 4.5], [10.5, 12.5]])


def test_tasks_conditions():
  t = tasks.make_task("classcond", (28, 28, 1), 10)
  assert t.cond_kind == "label" and t.cond_shape == ()
  assert t.condition(None, np.array([3, 4])).dtype == np.int32
  t = tasks.make_task("superres", (28, 28, 1), 10, factor=4)
  assert t.cond_shape == (7, 7, 1)
  assert t.condition(np.zeros((2, 28, 28, 1)), None).shape == (2, 7, 7, 1)


def test_task_errors():
  with pytest.raises(ConfigError, match="at least 2 classes"):
    tasks.make_task("classcond", (28, 28, 1), 0)
  with pytest.raises(ConfigError, match="divide"):
    tasks.make_task("superres", (30, 30, 1), 0, factor=4)
  with pytest.raises(ConfigError, match="not one of"):
    tasks.make_task("inpaint", (28, 28, 1), 10)
