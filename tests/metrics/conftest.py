"""Shared fixtures: the mnist5k feature net, trained once per session in the session's cache."""

import pathlib

import numpy as np
import pytest

from lsdm_jax.data.sources import to_float
from lsdm_jax.metrics.classifier import load_or_train_classifier


@pytest.fixture(scope="session")
def classifier_cache(lsdm_cache):
  """The session's LSDM_JAX_CACHE (tests/conftest.py), which the pipelines' metrics use too."""
  return pathlib.Path(lsdm_cache)


@pytest.fixture(scope="session")
def feature_net(mnist5k, classifier_cache):
  return load_or_train_classifier(mnist5k, cache_root=classifier_cache)


@pytest.fixture(scope="session")
def test_features(mnist5k, feature_net) -> np.ndarray:
  return feature_net.features(to_float(mnist5k.test_images))


@pytest.fixture(scope="session")
def train_subset(mnist5k) -> tuple[np.ndarray, np.ndarray]:
  """1,000 random train images (float32 [0, 1]) with their labels."""
  rows = np.random.default_rng(0).choice(len(mnist5k.train_images), 1000, replace=False)
  return to_float(mnist5k.train_images[rows]), mnist5k.train_labels[rows]
