"""Tests for the LPIPS distance, on random weights (parity: lpips_parity_test.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lsdm_jax.errors import DataError
from lsdm_jax.metrics.lpips import (
  LPIPS,
  convert_state_dict,
  expected_shapes,
  load_lpips,
  load_lpips_params,
  lpips_distance,
  unit_normalize,
)


@pytest.fixture(scope="module")
def state_dict(lpips_weights):
  with np.load(lpips_weights) as f:
    return dict(f)


@pytest.fixture(scope="module")
def weights_file(lpips_weights):
  return lpips_weights


@pytest.fixture(scope="module")
def dist(weights_file):
  return load_lpips(weights_file)


@pytest.fixture(scope="module")
def images():
  """Smooth colour images (sums of random sinusoids) in [0, 1], and one noise direction."""
  rng = np.random.default_rng(1)
  grid = np.linspace(0.0, 2.0 * np.pi, 32)
  yy, xx = np.meshgrid(grid, grid, indexing="ij")
  out = np.zeros((3, 32, 32, 3))
  for i in range(3):
    for c in range(3):
      fy, fx, phase = rng.uniform(0.5, 3.0), rng.uniform(0.5, 3.0), rng.uniform(0, 2 * np.pi)
      out[i, :, :, c] = 0.5 + 0.4 * np.sin(fy * yy + fx * xx + phase)
  noise = rng.standard_normal(out.shape)
  return out.astype(np.float32), noise.astype(np.float32)


def _distort(x, noise, sigma):
  return np.clip(x + sigma * noise, 0.0, 1.0).astype(np.float32)


def test_the_keys_are_those_of_the_lpips_state_dict():
  shapes = expected_shapes()
  assert len(shapes) == 2 * 13 + 5  # 13 VGG16 convolutions up to relu5_3, 5 lin layers.
  assert shapes["net.slice1.0.weight"] == (64, 3, 3, 3)
  assert shapes["net.slice3.14.bias"] == (256,)
  assert shapes["net.slice5.28.weight"] == (512, 512, 3, 3)
  assert shapes["lin0.model.1.weight"] == (1, 64, 1, 1)
  assert shapes["lin4.model.1.weight"] == (1, 512, 1, 1)


def test_converted_params_match_the_module(state_dict):
  params = convert_state_dict(state_dict)
  x = jnp.zeros((1, 16, 16, 3))
  init = jax.eval_shape(LPIPS().init, jax.random.key(0), x, x)["params"]
  assert jax.tree.map(lambda a: a.shape, params) == jax.tree.map(lambda a: a.shape, init)
  np.testing.assert_array_equal(
    params["net"]["slice2_7"]["kernel"][1, 2, 5, 9], state_dict["net.slice2.7.weight"][9, 5, 1, 2]
  )


def test_distance_properties(dist, images):
  x, noise = images
  y = _distort(x, noise, 0.1)
  d = dist(x, y)
  assert d.shape == (3,) and d.dtype == jnp.float32
  assert np.isfinite(d).all() and (d > 0).all()
  assert np.abs(dist(x, x)).max() <= 1e-7
  np.testing.assert_allclose(dist(y, x), d, rtol=1e-6)
  # Same noise direction, growing amplitude: the distance grows.
  levels = np.stack([dist(x, _distort(x, noise, s)) for s in (0.02, 0.1, 0.3)])
  assert (np.diff(levels, axis=0) > 0).all(), levels


def test_pure_function_and_pytree_agree(dist, images):
  x, noise = images
  y = _distort(x, noise, 0.1)
  expected = dist(x, y)
  # The distance is a pytree argument of a jitted function (params as leaves, dtype static).
  pure = jax.jit(lambda d, a, b: lpips_distance(d.params, a, b))(dist, x, y)
  np.testing.assert_allclose(pure, expected, rtol=1e-6)
  leaves = jax.tree.leaves(dist)
  assert len(leaves) == 2 * 13 + 5 and all(isinstance(v, jax.Array) for v in leaves)


def test_gradients_are_finite_under_jit(dist, images):
  x, noise = images
  y = _distort(x, noise, 0.1)

  @jax.jit
  def grad(params, a, b):
    return jax.grad(lambda a: lpips_distance(params, a, b).sum())(a)

  g = grad(dist.params, x, y)
  assert g.shape == x.shape and np.isfinite(g).all() and np.abs(g).max() > 0
  # At x == y the distance is at its minimum: a zero, finite gradient.
  g0 = grad(dist.params, x, x)
  assert np.isfinite(g0).all() and np.abs(g0).max() <= 1e-6
  # A descent step on x lowers the distance.
  step = x - 0.05 * g / np.abs(g).max()
  assert (dist(step, y) < dist(x, y)).all()


def test_unit_normalize_of_a_zero_vector_has_a_finite_gradient():
  f = jnp.array([[0.0, 0.0, 0.0], [3.0, 0.0, 4.0]])
  np.testing.assert_allclose(unit_normalize(f), [[0, 0, 0], [0.6, 0, 0.8]], rtol=1e-6)
  g = jax.grad(lambda f: unit_normalize(f).sum())(f)
  assert np.isfinite(g).all()
  # A vector the ReLU switched off passes no gradient back (a plain sqrt gives NaN here).
  dead = jnp.array([[-1.0, -2.0, -0.5], [3.0, 0.0, 4.0]])
  g = jax.grad(lambda f: unit_normalize(jax.nn.relu(f)).sum())(dead)
  assert np.isfinite(g).all() and (g[0] == 0).all()


def test_grey_images_are_repeated_to_three_channels(dist, images):
  x, noise = images
  grey, grey_y = x[..., :1], _distort(x, noise, 0.1)[..., :1]
  d = dist(grey, grey_y)
  np.testing.assert_array_equal(d, dist(np.repeat(grey, 3, -1), np.repeat(grey_y, 3, -1)))
  assert np.isfinite(d).all() and (d > 0).all()


def test_bfloat16_compute_is_close_to_float32(weights_file, dist, images):
  x, noise = images
  y = _distort(x, noise, 0.1)
  low = load_lpips(weights_file, dtype=jnp.bfloat16)
  d16, d32 = low(x, y), dist(x, y)
  assert d16.dtype == jnp.float32
  # Measured on random weights: 1e-3 relative at this distortion, 1.3e-2 at a fifth of it.
  np.testing.assert_allclose(d16, d32, rtol=0.02)


def test_bad_images_raise_data_error(dist):
  with pytest.raises(DataError, match=r"\(N, H, W, 1 or 3\)"):
    dist(np.zeros((2, 16, 16, 2)), np.zeros((2, 16, 16, 2)))
  with pytest.raises(DataError, match="H and W >= 16"):
    dist(np.zeros((2, 8, 16, 3)), np.zeros((2, 8, 16, 3)))
  with pytest.raises(DataError, match="differ in shape"):
    dist(np.zeros((2, 16, 16, 3)), np.zeros((1, 16, 16, 3)))


def _save(path, arrays):
  np.savez(path, **arrays)
  return path


def test_bad_weight_files_raise_one_line_data_errors(tmp_path, state_dict):
  missing = {k: v for k, v in state_dict.items() if k != "lin3.model.1.weight"}
  transposed = dict(state_dict)
  transposed["net.slice4.19.weight"] = transposed["net.slice4.19.weight"].transpose(2, 3, 1, 0)
  as_int = {**state_dict, "net.slice1.0.bias": np.zeros(64, np.int64)}
  garbage = tmp_path / "garbage.npz"
  garbage.write_bytes(b"not an archive")
  single = tmp_path / "single.npy"
  np.save(single, np.zeros(3))
  cases = {
    "absent": (tmp_path / "absent.npz", "does not exist"),
    "garbage": (garbage, "is not an .npz"),
    "single": (single, "holds one array"),
    "foreign": (_save(tmp_path / "foreign.npz", {"w": np.zeros(3)}), "holds no LPIPS VGG keys"),
    "missing": (
      _save(tmp_path / "missing.npz", missing),
      r"lacks key 'lin3.model.1.weight' \(expected shape \(1, 512, 1, 1\)\)",
    ),
    "shape": (
      _save(tmp_path / "shape.npz", transposed),
      r"'net.slice4.19.weight' has shape \(3, 3, 512, 512\), expected \(512, 512, 3, 3\)",
    ),
    "dtype": (_save(tmp_path / "dtype.npz", as_int), "'net.slice1.0.bias' has dtype int64"),
  }
  for name, (path, expected) in cases.items():
    with pytest.raises(DataError, match=expected) as err:
      load_lpips_params(path)
    message = str(err.value)
    assert "\n" not in message, name
    assert str(path) in message, name
    assert 'lpips.LPIPS(net="vgg").state_dict()' in message and "numpy.savez" in message, name


def test_unused_keys_are_ignored(state_dict):
  required = {k: state_dict[k] for k in expected_shapes()}
  extra = {**state_dict, "some.other.key": np.zeros(2, np.int64)}
  jax.tree.map(
    np.testing.assert_array_equal, convert_state_dict(required), convert_state_dict(extra)
  )
