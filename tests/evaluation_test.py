"""Tests for a run's evaluation: one code path for every task, and its config checks."""

import pytest

import lsdm_jax
from experiments.configs import test as tiny
from lsdm_jax import evaluation, train
from lsdm_jax.errors import ConfigError, DataError


def test_every_kind_of_condition_has_an_evaluation():
  from lsdm_jax.data.tasks import make_task

  kinds = {
    make_task("classcond", (8, 8, 1), 3).cond_kind,
    make_task("attributes", (8, 8, 1), 0, num_attributes=2).cond_kind,
    make_task("superres", (8, 8, 1), 0).cond_kind,
  }
  assert kinds == set(evaluation.TASKS)


def test_evaluate_again_gives_the_run_s_metrics(tiny_run):
  config, workdir, metrics = tiny_run
  again = evaluation.evaluate(lsdm_jax.load(workdir), train.setup(config), config)
  timed = {"generate_seconds_per_1000"}
  assert set(again) == set(metrics) - {"timings"}
  for name in set(again) - timed:
    assert again[name] == pytest.approx(metrics[name], rel=1e-5, abs=1e-6), name
  assert all(isinstance(v, float) for v in again.values())


def test_an_unknown_reference_is_a_config_error(tiny_run):
  config, workdir, _ = tiny_run
  with pytest.raises(ConfigError, match="reference 'train' is not one of"):
    evaluation.evaluate(lsdm_jax.load(workdir), train.setup(config), config, reference="train")


def test_unpaired_reference_leaves_out_the_bound(tiny_run):
  config, workdir, _ = tiny_run
  m = evaluation.evaluate(lsdm_jax.load(workdir), train.setup(config), config, "unpaired")
  assert "fd_ratio" in m and not any(k.startswith("bound_") for k in m)


def test_missing_inception_weights_fail_before_anything_runs(tmp_path):
  config = tiny.get_config()
  config.eval.inception_weights = str(tmp_path / "nope.npz")
  with pytest.raises(DataError, match="eval.inception_weights=.*does not exist"):
    train.check_config(config)
  config.eval.enabled = False  # Nothing reads the weights then.
  train.check_config(config)


def test_pictures_are_written_for_the_run(tiny_run):
  _, workdir, _ = tiny_run
  for name in ("samples/grid.png", "samples/reconstructions.png", "curves/stage1.png"):
    assert (workdir / name).stat().st_size > 0
