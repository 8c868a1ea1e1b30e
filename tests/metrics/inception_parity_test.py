"""Parity of the Flax FID Inception with pytorch-fid's, on random weights (needs torch).

pytorch-fid's network with random weights (the `random_pytorch_fid` fixture, conftest.py)
goes through `numpy.savez` to `load_inception`; both networks then embed the same images
through pytorch-fid's own `InceptionV3` forward (resize, [-1, 1], blocks 0-3).
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pfi = pytest.importorskip("pytorch_fid.inception")

from lsdm_jax.metrics.inception import load_inception  # noqa: E402


@pytest.mark.slow
def test_pool_features_match_pytorch_fid(tmp_path, random_pytorch_fid):
  net, reference = random_pytorch_fid
  path = tmp_path / "weights.npz"
  np.savez(path, **{k: v.numpy() for k, v in net.state_dict().items()})
  features = load_inception(path)

  rng = np.random.default_rng(2)
  # Upsampled, downsampled (non-square) and already 299x299.
  for shape in [(3, 32, 32, 3), (2, 341, 420, 3), (1, 299, 299, 3)]:
    images = rng.uniform(size=shape).astype(np.float32)
    with torch.no_grad():
      expected = reference(torch.from_numpy(images).permute(0, 3, 1, 2))[0]
    expected = expected.reshape(shape[0], -1).numpy().astype(np.float64)
    got = features(images)
    scale = np.abs(expected).max()
    assert scale > 1.0
    assert np.abs(got - expected).max() <= 1e-5 * scale, shape
