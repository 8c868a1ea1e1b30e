"""Parity of the Flax FID Inception with pytorch-fid's, on random weights (needs torch).

pytorch-fid's network is built as `fid_inception_v3` builds it, without downloading: Kaiming
convolutions, random BatchNorm scales and shifts, and running statistics gathered in a
train-mode pass over calibration images, so every BatchNorm term matters. Its `state_dict`
goes through `numpy.savez` to `load_inception`; both networks then embed the same images
through pytorch-fid's own `InceptionV3` forward (resize, [-1, 1], blocks 0-3).
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pfi = pytest.importorskip("pytorch_fid.inception")

from lsdm_jax.metrics.inception import load_inception  # noqa: E402


def _random_fid_inception():
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
  return net


@pytest.mark.slow
def test_pool_features_match_pytorch_fid(tmp_path, monkeypatch):
  net = _random_fid_inception()
  monkeypatch.setattr(pfi, "fid_inception_v3", lambda: net)
  reference = pfi.InceptionV3([pfi.InceptionV3.BLOCK_INDEX_BY_DIM[2048]])
  reference.train()
  with torch.no_grad():
    reference(torch.rand(6, 3, 64, 64, generator=torch.Generator().manual_seed(1)))
  reference.eval()
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
