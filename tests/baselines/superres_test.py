"""Super-resolution baselines: bicubic and the paired-only L2 regressor."""

import jax
import numpy as np
import pytest

from lsdm_jax.baselines import superres
from lsdm_jax.data.sources import to_float
from lsdm_jax.data.tasks import avg_pool
from lsdm_jax.errors import DataError

from .conftest import section


@pytest.fixture(scope="module")
def pairs(mnist5k):
  y = to_float(mnist5k.train_images[:96])
  return avg_pool(y, 4), y


def test_bicubic_shape_range_and_constants():
  x = np.full((3, 7, 7, 1), 0.3, np.float32)
  out = superres.bicubic(x, 4)
  assert out.shape == (3, 28, 28, 1) and out.dtype == np.float32
  np.testing.assert_allclose(out, 0.3, atol=1e-5)
  rng = np.random.default_rng(0).uniform(size=(2, 7, 7, 1)).astype(np.float32)
  out = superres.bicubic(rng, 4)
  assert out.min() >= 0.0 and out.max() <= 1.0


def test_untrained_regressor_is_bicubic(pairs):
  x, _ = pairs
  module = superres.Regressor(4, (8,))
  params = module.init(jax.random.key(0), x[:1])["params"]
  np.testing.assert_allclose(
    module.apply({"params": params}, x[:5]), superres.bicubic(x[:5], 4), atol=1e-5
  )


def test_regressor_beats_bicubic_on_its_pairs(pairs):
  from lsdm_jax.metrics.image import psnr

  x, y = pairs
  config = section("superres_regressor", steps=150, batch_size=32, features=(16, 16))
  model = superres.train_regressor(x, y, 4, config=config)
  np.testing.assert_array_equal(model.history["step"], [150])
  assert np.isfinite(model.history["mse"][0])
  pred = model.predict(x, batch_size=40)  # Several batches, the last one short.
  assert pred.shape == y.shape
  gain = float(np.mean(psnr(pred, y)) - np.mean(psnr(superres.bicubic(x, 4), y)))
  assert gain > 0.5, gain


def test_evaluate_baselines_reports_both_without_a_net(pairs):
  x, y = pairs
  config = section("superres_regressor", steps=5)
  res = superres.evaluate_baselines(x[:64], y[:64], x[64:], y[64:], 4, None, config=config)
  assert set(res) == {"bicubic", "regression"}
  for metrics in res.values():
    assert {"psnr", "ssim", "consistency", "fd_pixels"} <= set(metrics)
    assert "fd" not in metrics and np.isfinite(metrics["psnr"])
  assert res["regression"]["train_seconds"] > 0


def test_regressor_refuses_mismatched_pairs(pairs):
  x, y = pairs
  with pytest.raises(DataError, match="upsampled by 2"):
    superres.train_regressor(x, y, 2, config=section("superres_regressor", steps=1))
