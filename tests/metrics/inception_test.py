"""Tests for the FID Inception features, on random weights (parity: inception_parity_test.py)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lsdm_jax.errors import ConfigError, DataError
from lsdm_jax.metrics.inception import (
  FEATURE_DIM,
  BasicConv2d,
  InceptionV3,
  convert_state_dict,
  expected_shapes,
  load_inception,
  random_state_dict,
)


@pytest.fixture(scope="module")
def state_dict():
  return random_state_dict(0)


@pytest.fixture(scope="module")
def weights_file(state_dict, tmp_path_factory):
  path = tmp_path_factory.mktemp("inception") / "weights.npz"
  np.savez(path, **state_dict)
  return path


@pytest.fixture(scope="module")
def features(weights_file):
  return load_inception(weights_file, batch_size=3)


@pytest.fixture(scope="module")
def images():
  return np.random.default_rng(0).uniform(size=(3, 32, 32, 3)).astype(np.float32)


def test_features_are_finite_deterministic_and_image_dependent(features, images):
  first, again = features(images), features(images)
  assert first.shape == (3, FEATURE_DIM) and first.dtype == np.float64
  assert np.isfinite(first).all() and np.abs(first).max() > 0
  np.testing.assert_array_equal(first, again)
  assert not np.allclose(first[0], first[1])


def test_batching_does_not_change_the_features(features, images):
  whole = features(images)  # One call of 3.
  pieces = features(images, batch_size=2)  # 2, then 1 padded to 2.
  np.testing.assert_allclose(pieces, whole, rtol=1e-5, atol=1e-5 * np.abs(whole).max())


def test_grey_and_uint8_inputs(features, images):
  grey = images[..., :1]
  expected = features(np.repeat(grey, 3, axis=-1))
  np.testing.assert_array_equal(features(grey), expected)
  np.testing.assert_array_equal(features(grey[..., 0]), expected)
  as_uint8 = (images * 255).round().astype(np.uint8)
  np.testing.assert_array_equal(features(as_uint8), features(as_uint8.astype(np.float32) / 255.0))


def test_any_image_size_is_resized_inside(features):
  feats = features(np.random.default_rng(1).uniform(size=(1, 40, 24, 3)).astype(np.float32))
  assert feats.shape == (1, FEATURE_DIM) and np.isfinite(feats).all()
  assert features(np.zeros((0, 8, 8, 3), np.float32)).shape == (0, FEATURE_DIM)


def test_bad_images_raise_data_error(features):
  with pytest.raises(DataError, match=r"\(N, H, W, 1 or 3\)"):
    features(np.zeros((2, 8, 8, 2), np.float32))
  with pytest.raises(DataError, match="dtype int32"):
    features(np.zeros((2, 8, 8, 3), np.int32))
  with pytest.raises(ConfigError, match="batch_size is 0"):
    features(np.zeros((2, 8, 8, 3), np.float32), batch_size=0)


def test_converted_variables_match_the_network(state_dict):
  variables = convert_state_dict(state_dict)
  init = jax.eval_shape(InceptionV3().init, jax.random.key(0), jnp.zeros((1, 75, 75, 3)))
  shapes = jax.tree.map(lambda a: a.shape, variables)
  assert shapes == jax.tree.map(lambda a: a.shape, init)
  # Without fc.* and the BatchNorm counters (older exports) the result is the same.
  required = {k: state_dict[k] for k in expected_shapes()}
  jax.tree.map(np.testing.assert_array_equal, convert_state_dict(required), variables)


def test_batchnorm_is_folded_into_the_convolution(state_dict):
  """Conv (OIHW) -> BatchNorm (eps 0.001, running statistics) -> ReLU, unfolded, agrees."""
  folded = convert_state_dict(state_dict)["params"]["Conv2d_1a_3x3"]
  p = {k.split(".", 1)[1]: v for k, v in state_dict.items() if k.startswith("Conv2d_1a_3x3.")}
  x = jnp.asarray(np.random.default_rng(2).normal(size=(2, 9, 9, 3)), jnp.float32)
  hp = jax.lax.Precision.HIGHEST
  y = jax.lax.conv_general_dilated(
    x, p["conv.weight"], (2, 2), "VALID", dimension_numbers=("NHWC", "OIHW", "NHWC"), precision=hp
  )
  c = lambda v: v.reshape(1, 1, 1, -1)  # Per channel, broadcast explicitly.
  y = (y - c(p["bn.running_mean"])) / c(np.sqrt(p["bn.running_var"] + 1e-3)) * c(p["bn.weight"])
  expected = nn.relu(y + c(p["bn.bias"]))
  got = BasicConv2d(32, 3, strides=2).apply({"params": folded}, x)
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def _save(path, arrays):
  np.savez(path, **arrays)
  return path


def _bad_files(tmp_path, state_dict):
  missing = dict(state_dict)
  del missing["Mixed_6e.branch_pool.bn.running_var"]
  extra = {**state_dict, "AuxLogits.fc.weight": np.zeros((1008, 768), np.float32)}
  wrong = {**state_dict}
  wrong["Mixed_5b.branch1x1.conv.weight"] = wrong["Mixed_5b.branch1x1.conv.weight"].transpose(
    2, 3, 1, 0
  )
  as_int = {**state_dict, "Conv2d_2a_3x3.bn.bias": np.zeros(32, np.int64)}
  garbage = tmp_path / "garbage.npz"
  garbage.write_bytes(b"not an archive")
  single = tmp_path / "single.npy"
  np.save(single, np.zeros(3))
  return {
    "absent": (tmp_path / "absent.npz", "does not exist"),
    "garbage": (garbage, "is not an .npz"),
    "single": (single, "holds one array"),
    "foreign": (_save(tmp_path / "foreign.npz", {"w": np.zeros(3)}), "holds no pytorch-fid"),
    "missing": (
      _save(tmp_path / "missing.npz", missing),
      r"lacks key 'Mixed_6e.branch_pool.bn.running_var' \(expected shape \(192,\)\)",
    ),
    "extra": (_save(tmp_path / "extra.npz", extra), "unexpected key 'AuxLogits.fc.weight'"),
    "shape": (
      _save(tmp_path / "shape.npz", wrong),
      r"'Mixed_5b.branch1x1.conv.weight' has shape \(1, 1, 192, 64\), expected \(64, 192, 1, 1\)",
    ),
    "dtype": (_save(tmp_path / "dtype.npz", as_int), "'Conv2d_2a_3x3.bn.bias' has dtype int64"),
  }


def test_bad_weight_files_raise_one_line_data_errors(tmp_path, state_dict):
  for name, (path, expected) in _bad_files(tmp_path, state_dict).items():
    with pytest.raises(DataError, match=expected) as err:
      load_inception(path)
    message = str(err.value)
    assert "\n" not in message, name
    assert str(path) in message and "numpy.savez" in message, name
