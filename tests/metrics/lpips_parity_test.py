"""Parity of the Flax LPIPS with the `lpips` package's, on a random VGG16 (needs torch).

`lpips.LPIPS(net="vgg", pretrained=True, pnet_rand=True)` holds torchvision's randomly
initialised VGG16 (nothing is downloaded) and the linear weights shipped in the lpips wheel;
its VGG biases, zero at initialisation, are drawn at random so that they count. Its
`state_dict` goes through the module docstring's export to `load_lpips`, and both distances
are compared on the same image pairs, the package's with `normalize=True` (inputs in [0, 1]).
"""

import warnings

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")
lpips = pytest.importorskip("lpips")

from lsdm_jax.metrics.lpips import load_lpips, lpips_distance  # noqa: E402


@pytest.fixture(scope="module")
def reference():
  torch.manual_seed(0)
  with warnings.catch_warnings():
    # lpips passes torchvision the deprecated `pretrained=False`; nothing to fix on our side.
    warnings.simplefilter("ignore")
    net = lpips.LPIPS(net="vgg", pretrained=True, pnet_rand=True, verbose=False)
  with torch.no_grad():
    for name, p in net.net.named_parameters():
      if name.endswith(".bias"):
        p.normal_(0.0, 0.1)
  return net.eval()


@pytest.fixture(scope="module")
def dist(reference, tmp_path_factory):
  path = tmp_path_factory.mktemp("lpips") / "lpips_vgg.npz"
  sd = reference.state_dict()
  np.savez(path, **{k: v.numpy() for k, v in sd.items()})
  return load_lpips(path)


def _structured(rng, n, h, w, c):
  """Sums of random oriented sinusoids and a soft disc: smooth images with edges, in [0, 1]."""
  yy, xx = np.meshgrid(np.linspace(-1, 1, h), np.linspace(-1, 1, w), indexing="ij")
  out = np.zeros((n, h, w, c))
  for i in range(n):
    disc = 1.0 / (1.0 + np.exp(-40.0 * (0.5 - np.hypot(yy, xx))))
    for ch in range(c):
      f, theta, phase = rng.uniform(2, 8), rng.uniform(0, np.pi), rng.uniform(0, 2 * np.pi)
      wave = np.sin(f * (np.cos(theta) * xx + np.sin(theta) * yy) + phase)
      out[i, :, :, ch] = 0.5 + 0.25 * wave + 0.2 * (disc - 0.5)
  return np.clip(out, 0.0, 1.0)


def _pairs(rng, shape):
  """(name, x, y) pairs of (N, H, W, C) float32 images in [0, 1]."""
  noise = rng.uniform(size=shape)
  base = _structured(rng, *shape)
  blurred = (base + np.roll(base, 1, 1) + np.roll(base, -1, 1) + np.roll(base, 1, 2)) / 4
  pairs = [
    ("random", rng.uniform(size=shape), noise),
    ("random, 5% noise", noise, np.clip(noise + 0.05 * rng.standard_normal(shape), 0, 1)),
    ("structured, noise", base, np.clip(base + 0.1 * rng.standard_normal(shape), 0, 1)),
    ("structured, blur", base, blurred),
    ("structured, shift", base, np.roll(base, 2, axis=2)),
  ]
  return [(name, x.astype(np.float32), y.astype(np.float32)) for name, x, y in pairs]


def _to_torch(images):
  """NHWC float32 in [0, 1] -> NCHW, grey repeated to three channels (the package needs 3)."""
  t = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
  return t.repeat(1, 3, 1, 1) if t.shape[1] == 1 else t


@pytest.mark.slow
def test_distances_match_lpips(reference, dist):
  rng = np.random.default_rng(0)
  worst = 0.0
  # Square, larger, non-square with odd sizes (the max pools floor them), and grey.
  for shape in [(4, 32, 32, 3), (2, 64, 64, 3), (2, 37, 50, 3), (3, 32, 32, 1)]:
    for name, x, y in _pairs(rng, shape):
      with torch.no_grad():
        expected = reference(_to_torch(x), _to_torch(y), normalize=True).reshape(-1).numpy()
      got = np.asarray(dist(x, y))
      assert got.shape == expected.shape == (shape[0],)
      assert (expected > 0).all()
      rel = np.abs(got.astype(np.float64) - expected) / expected
      worst = max(worst, rel.max())
      assert rel.max() <= 1e-5, (shape, name, got, expected)
  print(f"max relative difference of the distances: {worst:.2e}")


@pytest.mark.slow
def test_gradient_matches_lpips(reference, dist):
  rng = np.random.default_rng(1)
  _, x, y = _pairs(rng, (2, 32, 32, 3))[2]
  tx = _to_torch(x).clone().requires_grad_(True)
  reference(tx, _to_torch(y), normalize=True).sum().backward()
  expected = tx.grad.permute(0, 2, 3, 1).numpy()
  got = jax.jit(jax.grad(lambda a: lpips_distance(dist.params, a, y).sum()))(x)
  scale = np.abs(expected).max()
  assert np.isfinite(expected).all() and scale > 0
  err = np.abs(np.asarray(got) - expected).max() / scale
  print(f"max gradient difference / max |gradient|: {err:.2e}")
  assert err <= 1e-5
