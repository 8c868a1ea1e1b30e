"""Tests of lsdm_jax.data.splits."""

import numpy as np
import pytest

from lsdm_jax.data import splits
from lsdm_jax.errors import ConfigError


def test_canonical_split_counts():
  train, test = splits.canonical_split(5000)
  assert len(train) == 4000 and len(test) == 1000
  assert np.all(test % 5 == 4) and len(np.intersect1d(train, test)) == 0


@pytest.mark.parametrize("n_paired, n_unpaired", [(500, 3500), (100, 0), (100, 1500), (37, 11)])
def test_paired_unpaired_counts_disjoint_stratified(mnist5k, n_paired, n_unpaired):
  s = splits.paired_unpaired_split(mnist5k.train_labels, n_paired, n_unpaired, seed=3)
  assert len(s.paired) == n_paired and len(s.unpaired) == n_unpaired
  assert len(np.intersect1d(s.paired, s.unpaired)) == 0
  assert len(np.unique(s.paired)) == n_paired
  per_class = np.bincount(mnist5k.train_labels[s.paired], minlength=10)
  assert per_class.max() - per_class.min() <= 1
  if n_unpaired >= 100:
    per_class = np.bincount(mnist5k.train_labels[s.unpaired], minlength=10)
    assert per_class.max() - per_class.min() <= 1


def test_split_is_seeded(mnist5k):
  a = splits.paired_unpaired_split(mnist5k.train_labels, 100, 200, seed=0)
  b = splits.paired_unpaired_split(mnist5k.train_labels, 100, 200, seed=0)
  c = splits.paired_unpaired_split(mnist5k.train_labels, 100, 200, seed=1)
  assert np.array_equal(a.paired, b.paired) and np.array_equal(a.unpaired, b.unpaired)
  assert not np.array_equal(a.paired, c.paired)


def test_impossible_splits_are_config_errors(mnist5k):
  with pytest.raises(ConfigError, match="only 4000 rows"):
    splits.paired_unpaired_split(mnist5k.train_labels, 500, 3600, seed=0)
  with pytest.raises(ConfigError, match="no paired example"):
    splits.paired_unpaired_split(mnist5k.train_labels, 5, 0, seed=0)
  with pytest.raises(ConfigError, match="n_paired >= 1"):
    splits.paired_unpaired_split(mnist5k.train_labels, 0, 10, seed=0)


def test_unlabelled_split():
  s = splits.paired_unpaired_split(None, 10, 20, seed=0, num_train=50)
  assert len(s.paired) == 10 and len(s.unpaired) == 20
  assert len(np.intersect1d(s.paired, s.unpaired)) == 0


def test_validation_rows_are_held_out_and_leave_the_default_split_as_it_was():
  labels = np.repeat(np.arange(10), 400)
  plain = splits.paired_unpaired_split(labels, 500, 3500, seed=3)
  none = splits.paired_unpaired_split(labels, 500, 3500, seed=3, n_validation=0)
  np.testing.assert_array_equal(plain.paired, none.paired)
  np.testing.assert_array_equal(plain.unpaired, none.unpaired)
  assert len(none.validation) == 0
  split = splits.paired_unpaired_split(labels, 500, 3000, seed=3, n_validation=500)
  parts = [split.paired, split.unpaired, split.validation]
  assert [len(p) for p in parts] == [500, 3000, 500]
  assert len(np.unique(np.concatenate(parts))) == 4000  # Disjoint.
  np.testing.assert_array_equal(np.bincount(labels[split.validation]), np.full(10, 50))
  again = splits.paired_unpaired_split(labels, 500, 3000, seed=3, n_validation=500)
  np.testing.assert_array_equal(again.validation, split.validation)
  with pytest.raises(ConfigError, match="data.n_validation=500 .* only 4000 rows"):
    splits.paired_unpaired_split(labels, 500, 3500, seed=3, n_validation=500)
