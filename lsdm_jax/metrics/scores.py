"""Scores of generated images against a data set's held-out split, as flat dicts of floats.

`evaluate_classcond`, `evaluate_attributes` and `evaluate_superres` score arrays of samples
(pure functions of images, conditions, a `Dataset` and its feature net); which samples a
run draws, and for which task, is `lsdm_jax.evaluation`'s. `inception_scores` turns the
FID protocol's feature statistics (samples, the train split as reference, real test images
as the floor) into FID, precision/recall and density/coverage; `inception_metrics` is the
same computed all at once from arrays (`evaluation` streams it).

Every distribution metric comes with its real-vs-real reference computed the same way from
an equally large random subset of *train* images (`distribution_metrics`), because Fréchet
distances and k-NN manifolds depend on the number of samples: `fd_ratio = fd / fd_real`
near 1 means "as close to the test set as other real images are". FD is reported in two
independent feature spaces, the classifier's and pooled pixels, so that no one feature net
can be overfitted.
"""

from __future__ import annotations

import math

import numpy as np

from lsdm_jax import wasserstein
from lsdm_jax.data.sources import Dataset, to_float
from lsdm_jax.errors import DataError
from lsdm_jax.metrics import image as image_metrics
from lsdm_jax.metrics.classifier import FeatureNet
from lsdm_jax.metrics.diversity import diversity_ratio, mean_pairwise_distance
from lsdm_jax.metrics.feature_stats import (
  REFERENCE_ROWS,
  FeatureFn,
  FeatureStats,
  quantize_uint8,
)
from lsdm_jax.metrics.fid import frechet_distance, frechet_distance_from_stats
from lsdm_jax.metrics.precision_recall import density_coverage, precision_recall

PIXEL_GRID = 8
JOINT_W1_MAX_POINTS = 500
# Sinkhorn ε of the joint W1 of (one-hot label, features / s), s the test features' mean
# pairwise distance: absolute and fixed, so that numbers of different runs compare.
JOINT_W1_EPSILON = 0.05
K_PRECISION_RECALL = 3  # Kynkäänniemi et al.'s k for improved precision/recall.
K_DENSITY_COVERAGE = 5  # Naeem et al.'s k for density/coverage.


def pixel_features(images: np.ndarray, grid: int = PIXEL_GRID) -> np.ndarray:
  """A net-free feature space: images average-pooled to at most `grid` x `grid` cells.

  Args:
    images: (N, H, W, C) float32 [0, 1] or uint8.
    grid: the pooled side is at most this (28x28 → 7x7 with factor 4).

  Returns:
    (N, h * w * C) float64 pooled pixels (rows and columns that do not fill a whole
    cell are cropped).
  """
  x = to_float(np.asarray(images))
  n, h, w, c = x.shape
  f = max(1, math.ceil(max(h, w) / grid))
  ho, wo = max(1, h // f), max(1, w // f)
  f_h, f_w = min(f, h), min(f, w)
  x = x[:, : ho * f_h, : wo * f_w].reshape(n, ho, f_h, wo, f_w, c).mean(axis=(2, 4))
  return x.reshape(n, -1).astype(np.float64)


def projected_pixel_features(images: np.ndarray, dim: int = 128, seed: int = 0) -> np.ndarray:
  """A net-free feature space that keeps fine detail: a fixed random projection of pixels.

  Pooled pixels cannot tell a sharp super-resolved image from its blurry input; a Gaussian
  projection of all pixels (fixed by `seed`, scaled by 1/sqrt(H W C)) can.

  Args:
    images: (N, H, W, C) float32 [0, 1] or uint8.
    dim: output width.
    seed: seeds the projection matrix (keep it fixed to compare runs).

  Returns:
    (N, dim) float64 features.
  """
  x = to_float(np.asarray(images)).reshape(len(images), -1).astype(np.float64)
  proj = np.random.default_rng(seed).standard_normal((x.shape[1], dim)) / np.sqrt(x.shape[1])
  return x @ proj


def check_images(images: np.ndarray, image_shape: tuple[int, ...], what: str) -> np.ndarray:
  images = np.asarray(images)
  if images.ndim != 4 or tuple(images.shape[1:]) != tuple(image_shape) or len(images) < 2:
    raise DataError(
      f"{what} have shape {images.shape}, expected (N >= 2, {', '.join(map(str, image_shape))})"
      " NHWC like the data set's images"
    )
  x = to_float(images)
  if not np.all(np.isfinite(x)):
    raise DataError(f"{what} contain NaN or infinite values; check the generator")
  lo, hi = float(x.min()), float(x.max())
  if lo < -1e-3 or hi > 1.0 + 1e-3:
    raise DataError(
      f"{what} range over [{lo:g}, {hi:g}]; pass float32 images in [0, 1] (divide by 255)"
    )
  return x


def subsample(rng: np.random.Generator, size: int, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
  """The same random `size` rows (without replacement) of each array; all rows if fewer."""
  n = len(arrays[0])
  if n <= size:
    return arrays
  rows = rng.choice(n, size, replace=False)
  return tuple(a[rows] for a in arrays)


def reference_rows(
  rng: np.random.Generator,
  num_train: int,
  n: int,
  test_labels: np.ndarray | None = None,
  train_labels: np.ndarray | None = None,
) -> np.ndarray:
  """n random train rows for a real-vs-real reference (with replacement only if needed);
  given labels, exactly as many of each class as `test_labels` holds (where moving mass
  across classes, not the images, would otherwise dominate a joint distance)."""
  if test_labels is None or train_labels is None:
    return rng.choice(num_train, n, replace=n > num_train)
  rows = []
  for k, count in zip(*np.unique(test_labels, return_counts=True), strict=True):
    candidates = np.flatnonzero(train_labels == k)
    rows.append(rng.choice(candidates, count, replace=count > len(candidates)))
  return np.concatenate(rows)


def fd_metrics(gen_feats, ref_feats, test_feats) -> dict[str, float]:
  """FD of the samples and of the real reference to the test features, and their ratio:
  {'fd', 'fd_real', 'fd_ratio'}."""
  out = {"fd": frechet_distance(gen_feats, test_feats)}
  out["fd_real"] = frechet_distance(ref_feats, test_feats)
  out["fd_ratio"] = out["fd"] / max(out["fd_real"], 1e-12)
  return out


def distribution_metrics(gen_feats, ref_feats, test_feats, rng, k: int = 3) -> dict[str, float]:
  """`fd_metrics`, and improved precision/recall (k-NN) of the samples and of the real
  reference: {'fd', 'fd_real', 'fd_ratio', 'precision', 'recall', 'precision_real',
  'recall_real'}.

  k-NN radii depend on set sizes: P/R compare equally many points (min(N, test size),
  subsampled with `rng`), the same test points for the samples and for their reference.
  """
  out = fd_metrics(gen_feats, ref_feats, test_feats)
  m = min(len(gen_feats), len(test_feats))
  (test_m,) = subsample(rng, m, test_feats)
  (gen_m,) = subsample(rng, m, gen_feats)
  (ref_m,) = subsample(rng, m, ref_feats)
  out["precision"], out["recall"] = precision_recall(test_m, gen_m, k=k)
  out["precision_real"], out["recall_real"] = precision_recall(test_m, ref_m, k=k)
  return out


def _feature_metrics(gen, ref, test, gen_feats, ref_feats, test_feats, rng, k):
  """`distribution_metrics` in the net's features, and `fd_metrics` in pooled pixels."""
  out = distribution_metrics(gen_feats, ref_feats, test_feats, rng, k)
  pixels = fd_metrics(pixel_features(gen), pixel_features(ref), pixel_features(test))
  out.update({f"fd_pixels{key[2:]}": value for key, value in pixels.items()})
  return out


def evaluate_classcond(
  generated: np.ndarray,
  requested_labels: np.ndarray,
  dataset: Dataset,
  net: FeatureNet,
  *,
  seed: int = 0,
  k: int = 3,
  joint_w1: bool = True,
) -> dict[str, float]:
  """Metrics of class-conditional samples against the data set's test split.

  Args:
    generated: (N, H, W, C) float32 [0, 1] (or uint8) generated images, N >= 2.
    requested_labels: (N,) int the class each image was asked to be.
    dataset: the labelled `Dataset` (its test split is the reference, its train split
      gives the real-vs-real baselines).
    net: the data set's `FeatureNet` (`load_or_train_classifier(dataset)`).
    seed: seeds the subsets drawn for the references.
    k: neighbour for precision/recall.
    joint_w1: also compute the (slower, Sinkhorn) joint W1 of (label, features).

  Returns:
    A dict of floats:
      accuracy: fraction of generated images the net classifies as requested.
      fd, fd_real, fd_ratio: FD in net features of generated vs test, of N random train
        images vs test (the reference), and their ratio.
      fd_pixels, fd_pixels_real, fd_pixels_ratio: the same in pooled pixels.
      precision, recall (and precision_real, recall_real): improved P/R (k-NN) against the
        test set, both sets subsampled to min(N, test size) points.
      diversity_ratio: within-class feature diversity of generated (by requested label)
        over that of the test images (by true label).
      joint_w1, joint_w1_real: Sinkhorn divergence (Euclidean cost, epsilon 0.05) between
        (onehot(label), features / s) clouds of at most 500 points, s the mean pairwise
        distance of the test features (so the number is scale-free); only if `joint_w1`.
      test_accuracy: the net's accuracy on the test split (its ceiling for `accuracy`).
      num_samples: N.
  """
  if dataset.test_labels is None or dataset.train_labels is None:
    raise DataError(f"data set {dataset.name!r} has no labels; class-conditional metrics need them")
  gen = check_images(generated, dataset.image_shape, "generated images")
  labels = np.asarray(requested_labels)
  if labels.shape != (len(gen),) or not np.issubdtype(labels.dtype, np.integer):
    raise DataError(
      f"requested labels have shape {labels.shape} and dtype {labels.dtype}; need ({len(gen)},)"
      " integers, one per generated image"
    )
  if labels.min() < 0 or labels.max() >= dataset.num_classes:
    raise DataError(f"requested labels must lie in [0, {dataset.num_classes})")
  n = len(gen)
  if n <= k:
    raise DataError(f"{n} generated images are too few for k={k} nearest neighbours; generate more")
  rng = np.random.default_rng(seed)
  ref_rows = reference_rows(rng, len(dataset.train_images), n)
  ref = to_float(dataset.train_images[ref_rows])
  ref_labels = dataset.train_labels[ref_rows]
  test = to_float(dataset.test_images)

  gen_logits, gen_feats = net.logits_and_features(gen)
  ref_feats = net.features(ref)
  test_logits, test_feats = net.logits_and_features(test)
  out: dict[str, float] = {"num_samples": float(n)}
  out["accuracy"] = float(np.mean(gen_logits.argmax(-1) == labels))
  out["test_accuracy"] = float(np.mean(test_logits.argmax(-1) == dataset.test_labels))
  out.update(_feature_metrics(gen, ref, test, gen_feats, ref_feats, test_feats, rng, k))
  out["diversity_ratio"] = diversity_ratio(gen_feats, labels, test_feats, dataset.test_labels)
  if joint_w1:
    # Sinkhorn is quadratic in the number of points: at most JOINT_W1_MAX_POINTS per side.
    cap = JOINT_W1_MAX_POINTS
    test_l, test_f = subsample(rng, cap, dataset.test_labels, test_feats)
    scale = max(mean_pairwise_distance(test_f), 1e-12)
    gen_l, gen_f = subsample(rng, cap, labels, gen_feats)
    ref_l, ref_f = subsample(rng, cap, ref_labels, ref_feats)
    for name, (la, fa) in (("joint_w1", (gen_l, gen_f)), ("joint_w1_real", (ref_l, ref_f))):
      out[name] = wasserstein.joint_w1(
        la,
        fa / scale,
        test_l,
        test_f / scale,
        num_classes=dataset.num_classes,
        epsilon=JOINT_W1_EPSILON,
      )
  return out


def evaluate_attributes(
  generated: np.ndarray,
  requested: np.ndarray,
  dataset: Dataset,
  net: FeatureNet,
  *,
  seed: int = 0,
  k: int = 3,
) -> dict[str, float]:
  """Metrics of attribute-conditional samples against the data set's test split.

  Args:
    generated: (N, H, W, C) float32 [0, 1] generated images, N > k.
    requested: (N, K) the attribute vector in {0, 1} each image was asked to have.
    dataset: a `Dataset` with attributes (test split: the reference; train split: the
      real-vs-real baselines).
    net: the data set's attribute classifier (`load_or_train_classifier(ds,
      attributes=True)`), one logit per attribute.
    seed: seeds the subsets drawn for the references.
    k: neighbour for precision/recall.

  Returns:
    A dict of floats:
      agreement: share of (image, attribute) entries where the classifier's decision
        (logit > 0) equals the requested value; agreement_<name> per attribute.
      agreement_real, agreement_real_<name>: the same for the test images and their own
        attributes (the classifier's ceiling).
      fd, fd_real, fd_ratio, fd_pixels(_real, _ratio), precision, recall (and _real):
        as `evaluate_classcond`'s.
      num_samples: N.
  """
  if dataset.test_attributes is None:
    raise DataError(f"data set {dataset.name!r} has no attributes; set data.attributes")
  gen = check_images(generated, dataset.image_shape, "generated images")
  names = dataset.attribute_names
  requested = np.asarray(requested, np.float32)
  if requested.shape != (len(gen), len(names)):
    raise DataError(
      f"requested attributes have shape {requested.shape}; need ({len(gen)}, {len(names)}),"
      " one vector per generated image"
    )
  n = len(gen)
  if n <= k:
    raise DataError(f"{n} generated images are too few for k={k} nearest neighbours; generate more")
  rng = np.random.default_rng(seed)
  ref = to_float(dataset.train_images[reference_rows(rng, len(dataset.train_images), n)])
  test = to_float(np.asarray(dataset.test_images))
  gen_logits, gen_feats = net.logits_and_features(gen)
  test_logits, test_feats = net.logits_and_features(test)
  ref_feats = net.features(ref)
  out: dict[str, float] = {"num_samples": float(n)}
  agree = (gen_logits > 0) == (requested > 0.5)
  agree_real = (test_logits > 0) == (dataset.test_attributes > 0.5)
  out["agreement"] = float(agree.mean())
  out["agreement_real"] = float(agree_real.mean())
  for j, name in enumerate(names):
    out[f"agreement_{name}"] = float(agree[:, j].mean())
    out[f"agreement_real_{name}"] = float(agree_real[:, j].mean())
  out.update(_feature_metrics(gen, ref, test, gen_feats, ref_feats, test_feats, rng, k))
  return out


def inception_scores(
  samples: FeatureStats, reference: FeatureStats, real: FeatureStats
) -> dict[str, float]:
  """The FID protocol's numbers, from the feature statistics of three image sets.

  Args:
    samples: statistics of the generated images (`feature_stats`).
    reference: of the reference images (the train split): its moments give FID, its kept
      rows are the real manifold of the k-NN metrics.
    real: of real held-out images scored like the samples: the floor of every number.

  Returns:
    A dict of floats:
      fid: Fréchet distance of the samples' Gaussian to the reference's.
      fid_real: the same for the real images, the FID a perfect generator would reach at
        this many images (FID is biased upwards by finite sets).
      precision_inception, recall_inception: improved precision/recall (k = 3) of the
        samples' kept rows against the reference's kept rows.
      density_inception, coverage_inception: density and coverage (k = 5), likewise.
      precision_inception_real ... coverage_inception_real: the same for the real images.
      fid_num_samples, fid_num_real, fid_reference_images: the three sets' sizes.

  Raises:
    ValueError: a kept set has too few rows for its k (see `knn_radii`).
  """
  out = {
    "fid": frechet_distance_from_stats(samples.mu, samples.sigma, reference.mu, reference.sigma),
    "fid_real": frechet_distance_from_stats(real.mu, real.sigma, reference.mu, reference.sigma),
  }
  for suffix, stats in (("", samples), ("_real", real)):
    pr = precision_recall(reference.features, stats.features, k=K_PRECISION_RECALL)
    dc = density_coverage(reference.features, stats.features, k=K_DENSITY_COVERAGE)
    out[f"precision_inception{suffix}"], out[f"recall_inception{suffix}"] = pr
    out[f"density_inception{suffix}"], out[f"coverage_inception{suffix}"] = dc
  out["fid_num_samples"] = float(samples.count)
  out["fid_num_real"] = float(real.count)
  out["fid_reference_images"] = float(reference.count)
  return out


def inception_metrics(
  generated: np.ndarray,
  reference: np.ndarray,
  real: np.ndarray,
  features: FeatureFn,
  *,
  keep: int = REFERENCE_ROWS,
  seed: int = 0,
  data_seed: int = 0,
) -> dict[str, float]:
  """`inception_scores` of three image sets held in memory, computed all at once.

  The array form of the FID protocol that `lsdm_jax.evaluation` streams: every set is
  quantised to uint8 (`quantize_uint8`), embedded by `features` (FID's Inception-v3 pool
  features, `metrics.inception`), and reduced to its mean, covariance and a seeded subset
  of `keep` rows, the same rows `feature_stats` keeps from a stream with the same seed.

  Args:
    generated: (N, H, W, C) float [0, 1] (or uint8) samples.
    reference: (R, H, W, C) the reference images (the train split).
    real: (M, H, W, C) real held-out images (the test split), for the floor.
    features: (n, H, W, C) float32 [0, 1] -> (n, D) features.
    keep: rows kept per set for the k-NN metrics.
    seed: seeds the samples' kept rows.
    data_seed: seeds the reference's and the real images' kept rows.

  Returns:
    The dict of `inception_scores`.
  """

  def stats(images: np.ndarray, s: int) -> FeatureStats:
    feats = np.asarray(features(to_float(quantize_uint8(np.asarray(images)))), np.float64)
    n = len(feats)
    # `feature_stats` keeps the rows with the smallest of n uniform draws, in stream order.
    rows = np.sort(np.argsort(np.random.default_rng(s).random(n))[:keep])
    sigma = np.atleast_2d(np.cov(feats, rowvar=False))
    return FeatureStats(feats.mean(axis=0), sigma, n, feats[rows].astype(np.float32), rows)

  samples, reference_stats = stats(generated, seed), stats(reference, data_seed)
  return inception_scores(samples, reference_stats, stats(real, data_seed))


def evaluate_superres(
  outputs: np.ndarray,
  inputs: np.ndarray,
  targets: np.ndarray,
  factor: int,
  net: FeatureNet | None,
  *,
  k: int = 3,
) -> dict[str, float]:
  """Metrics of super-resolved outputs against their high-resolution targets.

  Args:
    outputs: (N, H, W, C) float32 [0, 1] super-resolved images.
    inputs: (N, H/factor, W/factor, C) the low-resolution conditions.
    targets: (N, H, W, C) the true high-resolution images (test split rows).
    factor: the downsampling factor (2 or 4).
    net: the data set's `FeatureNet`, or None for unlabelled data (then the feature
      metrics are skipped and only pixel-space ones are reported).
    k: neighbour for precision/recall.

  Returns:
    A dict of floats: psnr, ssim and consistency (means over images; +inf PSNR means
    exact), fd_pixels (FD in `projected_pixel_features`, since pooled pixels would only see
    the input again), and with a net fd, precision, recall.
  """
  targets = np.asarray(targets)
  out_f = check_images(outputs, targets.shape[1:], "super-resolved outputs")
  tgt_f = check_images(targets, targets.shape[1:], "targets")
  h, w, c = targets.shape[1:]
  in_f = check_images(inputs, (h // factor, w // factor, c), "low-resolution inputs")
  if not len(out_f) == len(tgt_f) == len(in_f):
    raise DataError(
      f"outputs, inputs and targets must pair up; got {len(out_f)}, {len(in_f)}, {len(tgt_f)}"
    )
  result = {
    "psnr": float(np.mean(image_metrics.psnr(out_f, tgt_f))),
    "ssim": float(np.mean(image_metrics.ssim(out_f, tgt_f))),
    "consistency": float(np.mean(image_metrics.consistency(out_f, in_f, factor))),
    "fd_pixels": frechet_distance(projected_pixel_features(out_f), projected_pixel_features(tgt_f)),
  }
  if net is not None:
    out_feats, tgt_feats = net.features(out_f), net.features(tgt_f)
    result["fd"] = frechet_distance(out_feats, tgt_feats)
    result["precision"], result["recall"] = precision_recall(tgt_feats, out_feats, k=k)
  return result
