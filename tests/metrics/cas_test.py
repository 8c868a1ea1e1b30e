"""Tests for the classification accuracy score: real data scores like real data, shuffled
labels score at chance, a seed fixes the result, and bad inputs are data errors."""

import dataclasses

import numpy as np
import pytest

from lsdm_jax.data.sources import to_float
from lsdm_jax.errors import DataError
from lsdm_jax.metrics.cas import classification_accuracy_score


def _real_subset(mnist5k, n, seed):
  rows = np.random.default_rng(seed).choice(len(mnist5k.train_labels), n, replace=False)
  return to_float(mnist5k.train_images[rows]), mnist5k.train_labels[rows]


@pytest.mark.slow  # Two trainings of CAS_STEPS on 1,000 images: 20-40 s on two cores.
def test_real_images_score_like_real_images(mnist5k):
  # A different subset from the reference's: 1,000 real images as "generated", default steps.
  images, labels = _real_subset(mnist5k, 1000, seed=123)
  m = classification_accuracy_score(images, labels, mnist5k, seed=0)
  assert m["cas_real"] >= 0.9 and m["cas"] >= 0.9
  assert abs(m["cas"] - m["cas_real"]) <= 0.03
  assert m["cas_ratio"] == pytest.approx(m["cas"] / m["cas_real"])
  assert m["cas_n"] == m["cas_real_n"] == 1000


def test_right_labels_score_like_real_data_shuffled_ones_near_chance(mnist5k):
  # The default suite's short version: 300 images, 60 steps.
  images, labels = _real_subset(mnist5k, 300, seed=123)
  real = classification_accuracy_score(images, labels, mnist5k, seed=0, steps=60)
  assert real["cas_real"] >= 0.7 and abs(real["cas"] - real["cas_real"]) <= 0.05
  shuffled_labels = np.random.default_rng(1).permutation(labels)
  shuffled = classification_accuracy_score(images, shuffled_labels, mnist5k, seed=0, steps=60)
  # Chance is 0.1; a net trained on shuffled labels tends to give whole digit classes one
  # label, so its accuracy moves in steps of about 0.1 around chance.
  assert shuffled["cas"] <= 0.3 and shuffled["cas_ratio"] <= 0.4
  # A seed fixes the result: the reference, retrained in each call, is the same, and so is
  # a repeated call.
  assert shuffled["cas_real"] == real["cas_real"]
  assert classification_accuracy_score(images, shuffled_labels, mnist5k, seed=0, steps=60) == (
    shuffled
  )


def test_bad_inputs_are_data_errors(mnist5k):
  images, labels = _real_subset(mnist5k, 10, seed=0)
  with pytest.raises(DataError, match="shape"):
    classification_accuracy_score(images[:, :14], labels, mnist5k)
  with pytest.raises(DataError, match="range"):
    classification_accuracy_score(images * 255, labels, mnist5k)
  with pytest.raises(DataError, match="labels"):
    classification_accuracy_score(images, labels[:5], mnist5k)
  with pytest.raises(DataError, match="labels"):
    classification_accuracy_score(images, labels + 10, mnist5k)
  with pytest.raises(DataError, match="labels"):
    classification_accuracy_score(images, labels.astype(np.float32), mnist5k)
  unlabelled = dataclasses.replace(mnist5k, test_labels=None)
  with pytest.raises(DataError, match="no labels"):
    classification_accuracy_score(images, labels, unlabelled)
