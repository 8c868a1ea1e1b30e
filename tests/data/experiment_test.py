"""Tests for the data side of a run: conditions, test inputs and the unpaired reference."""

import dataclasses

import numpy as np
import pytest

from experiments.configs import test as tiny
from lsdm_jax.data import PairedSplit, load_experiment
from lsdm_jax.data.sources import to_float
from lsdm_jax.data.tasks import avg_pool
from lsdm_jax.errors import ConfigError, DataError
from lsdm_jax.train import check_config


@pytest.fixture(scope="module")
def exp(lsdm_cache):
  config = tiny.get_config()
  check_config(config)
  return load_experiment(config)


def test_paired_conditions_are_the_paired_labels(exp):
  np.testing.assert_array_equal(exp.paired_conditions(), exp.dataset.train_labels[exp.split.paired])
  rows = np.array([3, 1])
  np.testing.assert_array_equal(exp.paired_conditions(rows), exp.paired_conditions()[rows])
  with pytest.raises(ConfigError, match="no exact condition"):
    exp.unpaired_conditions()


def test_test_inputs_are_the_first_test_images_and_their_conditions(exp):
  rows, x, y = exp.test_inputs(7)
  np.testing.assert_array_equal(rows, np.arange(7))
  np.testing.assert_array_equal(y, to_float(exp.dataset.test_images[:7]))
  np.testing.assert_array_equal(x, exp.dataset.test_labels[:7])
  superres = dataclasses.replace(
    exp, task=dataclasses.replace(exp.task, cond_kind="image", factor=4)
  )
  _, x, y = superres.test_inputs(3)
  np.testing.assert_array_equal(x, avg_pool(y, 4))


def test_unpaired_reference_is_the_run_s_unpaired_images(exp):
  view = exp.unpaired_reference()
  ds, split = exp.dataset, exp.split
  np.testing.assert_array_equal(view.test_images, ds.train_images[split.unpaired])
  np.testing.assert_array_equal(view.test_labels, ds.train_labels[split.unpaired])
  np.testing.assert_array_equal(view.train_images, ds.train_images[split.paired])
  # No test image in it.
  assert not set(view.test_index) & set(ds.test_index)
  no_unpaired = dataclasses.replace(exp, split=PairedSplit(split.paired, split.paired[:0]))
  with pytest.raises(DataError, match="data.n_unpaired"):
    no_unpaired.unpaired_reference()


def test_validation_reference_is_the_held_out_rows(lsdm_cache):
  config = tiny.get_config()
  config.data.n_validation = 50
  check_config(config)
  exp = load_experiment(config)
  view, split = exp.validation_reference(), exp.split
  np.testing.assert_array_equal(view.test_images, exp.dataset.train_images[split.validation])
  assert not set(view.test_index) & set(exp.dataset.test_index)
  trained = set(exp.dataset.train_index[np.concatenate([split.paired, split.unpaired])])
  assert not set(view.test_index) & trained and set(view.train_index) == trained
  assert view.split_fingerprint("test") not in (
    exp.dataset.split_fingerprint("test"),
    exp.unpaired_reference().split_fingerprint("test"),
  )
  with pytest.raises(DataError, match="set data.n_validation"):
    load_experiment(tiny.get_config()).validation_reference()


def test_the_references_are_named_apart_from_the_test_split(exp):
  view = exp.unpaired_reference()
  assert view.fingerprint and view.fingerprint != exp.dataset.fingerprint
  assert view.split_fingerprint("test") != exp.dataset.split_fingerprint("test")
