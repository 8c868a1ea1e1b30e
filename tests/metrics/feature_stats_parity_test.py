"""Parity of the FID protocol with pytorch-fid on random Inception weights (needs torch).

The whole protocol on two small image sets: float images quantised to uint8, streamed in
batches through the Flax Inception (`feature_stats`), their running statistics and the
Fréchet distance (`frechet_distance_from_stats`), against pytorch-fid's
`calculate_fid_given_paths` on the same images written as PNG files, with pytorch-fid's
network replaced by the same random weights (the `random_pytorch_fid` fixture).
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
fid_score = pytest.importorskip("pytorch_fid.fid_score")
Image = pytest.importorskip("PIL.Image")

from lsdm_jax.metrics.feature_stats import feature_stats, quantize_uint8  # noqa: E402
from lsdm_jax.metrics.fid import frechet_distance_from_stats  # noqa: E402
from lsdm_jax.metrics.inception import load_inception  # noqa: E402

NUM_IMAGES = 40  # Per set: each image takes about a second on a CPU, in each network.


def _image_sets() -> tuple[np.ndarray, np.ndarray]:
  """Two differently distributed sets of float32 [0, 1] 32x32 colour images, off the uint8
  grid (so that quantisation matters): smooth blobs, and the same blobs squared plus noise."""
  rng = np.random.default_rng(0)
  coarse = rng.uniform(size=(2 * NUM_IMAGES, 4, 4, 3))
  smooth = coarse.repeat(8, axis=1).repeat(8, axis=2)
  a = smooth[:NUM_IMAGES]
  b = np.clip(smooth[NUM_IMAGES:] ** 2 + rng.normal(0.0, 0.1, smooth[NUM_IMAGES:].shape), 0, 1)
  return a.astype(np.float32), b.astype(np.float32)


def _write_pngs(images: np.ndarray, directory) -> None:
  directory.mkdir()
  for i, image in enumerate(quantize_uint8(images)):  # Saved as samples are saved.
    Image.fromarray(image).save(directory / f"{i:04d}.png")


@pytest.mark.slow
# pytorch-fid 0.3.0 passes `disp` to scipy's sqrtm, deprecated since SciPy 1.16; with fewer
# images than 2048 features its covariances are singular, and sqrtm says so.
@pytest.mark.filterwarnings("ignore:The `disp` argument is deprecated:DeprecationWarning")
@pytest.mark.filterwarnings("ignore:Matrix is singular:scipy.linalg.LinAlgWarning")
def test_fid_protocol_matches_pytorch_fid_on_png_files(tmp_path, random_pytorch_fid):
  net, _ = random_pytorch_fid
  weights = tmp_path / "weights.npz"
  np.savez(weights, **{k: v.numpy() for k, v in net.state_dict().items()})
  a, b = _image_sets()
  _write_pngs(a, tmp_path / "a")
  _write_pngs(b, tmp_path / "b")
  expected = fid_score.calculate_fid_given_paths(
    [str(tmp_path / "a"), str(tmp_path / "b")],
    batch_size=10,
    device="cpu",
    dims=2048,
    num_workers=0,
  )

  features = load_inception(weights, batch_size=10)
  # Batches of uneven sizes: the statistics do not depend on how the stream is cut.
  sa = feature_stats([a[:13], a[13:30], a[30:]], features, keep=0)
  sb = feature_stats([b[:25], b[25:]], features, keep=0)
  got = frechet_distance_from_stats(sa.mu, sa.sigma, sb.mu, sb.sigma)
  # The same images scored as floats, not as the PNGs they were saved as.
  fa = feature_stats([a], features, keep=0, quantize=False)
  fb = feature_stats([b], features, keep=0, quantize=False)
  unquantised = frechet_distance_from_stats(fa.mu, fa.sigma, fb.mu, fb.sigma)
  print(
    f"FID: ours {got!r}, pytorch-fid {expected!r}, relative {abs(got / expected - 1):.3g}; "
    f"unquantised {unquantised!r}, relative {abs(unquantised / expected - 1):.3g}"
  )
  assert expected > 1.0  # Two different sets: far from 0, so the comparison means something.
  # Measured: 7.9e-7 relative (pytorch-fid's scipy sqrtm on singular covariances against our
  # eigendecompositions; features within 1e-5 of their scale); the floats unquantised are
  # 3.7e-3 off, so the test sees a protocol that skips or changes the quantisation.
  assert got == pytest.approx(expected, rel=1e-5)
  assert unquantised != pytest.approx(expected, rel=1e-4)
