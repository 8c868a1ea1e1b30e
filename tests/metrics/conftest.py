"""Shared fixtures: the mnist5k feature net, trained once per session in the session's cache;
pytorch-fid's Inception network with random weights, for the parity tests (needs torch)."""

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


@pytest.fixture
def random_pytorch_fid(monkeypatch):
  """pytorch-fid's network with random weights, and its `InceptionV3` wrapper around it.

  Built as `fid_inception_v3` builds it, without downloading: Kaiming convolutions, random
  BatchNorm scales and shifts, and running statistics gathered in a train-mode pass over
  calibration images, so every BatchNorm term matters. `pytorch_fid.inception.
  fid_inception_v3` returns this network for the test's duration, so every `InceptionV3`
  pytorch-fid builds (`calculate_fid_given_paths` included) runs it.

  Returns:
    (net, wrapper): the `Inception3` whose `state_dict` `load_inception` reads, and an
    `InceptionV3` of its 2048-d pool features in eval mode.
  """
  torch = pytest.importorskip("torch")
  pfi = pytest.importorskip("pytorch_fid.inception")
  torch.manual_seed(0)
  net = pfi._inception_v3(num_classes=1008, aux_logits=False, weights=None)
  net.Mixed_5b = pfi.FIDInceptionA(192, pool_features=32)
  net.Mixed_5c = pfi.FIDInceptionA(256, pool_features=64)
  net.Mixed_5d = pfi.FIDInceptionA(288, pool_features=64)
  net.Mixed_6b = pfi.FIDInceptionC(768, channels_7x7=128)
  net.Mixed_6c = pfi.FIDInceptionC(768, channels_7x7=160)
  net.Mixed_6d = pfi.FIDInceptionC(768, channels_7x7=160)
  net.Mixed_6e = pfi.FIDInceptionC(768, channels_7x7=192)
  net.Mixed_7b = pfi.FIDInceptionE_1(1280)
  net.Mixed_7c = pfi.FIDInceptionE_2(2048)
  with torch.no_grad():
    for m in net.modules():
      if isinstance(m, torch.nn.Conv2d):
        torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
      elif isinstance(m, torch.nn.BatchNorm2d):
        m.weight.uniform_(0.5, 1.5)
        m.bias.normal_(0.0, 0.2)
        m.momentum = None  # Running statistics = the calibration pass's average.
  monkeypatch.setattr(pfi, "fid_inception_v3", lambda: net)
  wrapper = pfi.InceptionV3([pfi.InceptionV3.BLOCK_INDEX_BY_DIM[2048]])
  wrapper.train()
  with torch.no_grad():
    wrapper(torch.rand(6, 3, 64, 64, generator=torch.Generator().manual_seed(1)))
  wrapper.eval()
  return net, wrapper
