"""All metrics of a run on the held-out (canonical test) split, as one flat dict of floats.

`evaluate(lsdm, exp, config)` scores a trained model: it draws the samples, times them
and calls `evaluate_classcond`, `evaluate_attributes` or `evaluate_superres` on them,
adding the bound's terms (classcond) or the per-input spread (superres). With
`eval.inception_weights` it also reports FID and precision/recall in the pool features of
FID's Inception-v3 (`inception_metrics`). The superres sample pictures of a run
(`write_superres_grid`, `superres_spread` with a path) are drawn here too.

Every distribution metric comes with its real-vs-real reference computed the same way from
an equally large random subset of *train* images, because Fréchet distances and k-NN
manifolds depend on the number of samples: `fd_ratio = fd / fd_real` near 1 means "as close
to the test set as other real images are". FD is reported in two independent feature
spaces, the classifier's and pooled pixels, so that no one feature net can be overfitted.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import TYPE_CHECKING

import jax
import numpy as np

from lsdm_jax import plots
from lsdm_jax.data.sources import Dataset, to_float
from lsdm_jax.errors import ConfigError, DataError
from lsdm_jax.metrics import image as image_metrics
from lsdm_jax.metrics.classifier import FeatureNet, load_or_train_classifier
from lsdm_jax.metrics.diversity import diversity_ratio
from lsdm_jax.metrics.fid import frechet_distance
from lsdm_jax.metrics.precision_recall import precision_recall
from lsdm_jax.metrics.wasserstein_features import DEFAULT_EPSILON, joint_w1_sinkhorn

if TYPE_CHECKING:
  from lsdm_jax.model import LSDM
  from lsdm_jax.train import Experiment

PIXEL_GRID = 8
JOINT_W1_MAX_POINTS = 500
REFERENCES = ("test", "unpaired")  # What `evaluate` can score samples against.
SPREAD_INPUTS = 200  # Test inputs the per-input spread is measured on.
SPREAD_SAMPLES = 8  # Samples per input (and nearest real train images) for the spread.
# Test images the bound's W1 terms use: Sinkhorn time grows as its square, and the estimates
# depend on it (finite-cloud W1), so runs are comparable at the same value only.
BOUND_MAX_POINTS = 500


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


def _check_images(images: np.ndarray, image_shape: tuple[int, ...], what: str) -> np.ndarray:
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


def _subsample(rng: np.random.Generator, size: int, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
  """The same random `size` rows (without replacement) of each array; all rows if fewer."""
  n = len(arrays[0])
  if n <= size:
    return arrays
  rows = rng.choice(n, size, replace=False)
  return tuple(a[rows] for a in arrays)


def _joint_w1(labels_a, feats_a, labels_b, feats_b, scale, num_classes) -> float:
  return joint_w1_sinkhorn(
    labels_a,
    feats_a / scale,
    labels_b,
    feats_b / scale,
    epsilon=DEFAULT_EPSILON,
    label_scale=1.0,
    num_classes=num_classes,
  )


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
  gen = _check_images(generated, dataset.image_shape, "generated images")
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
  ref_rows = _reference_rows(rng, len(dataset.train_images), n)
  ref = to_float(dataset.train_images[ref_rows])
  ref_labels = dataset.train_labels[ref_rows]
  test = to_float(dataset.test_images)

  gen_logits, gen_feats = net.logits_and_features(gen)
  ref_feats = net.features(ref)
  test_logits, test_feats = net.logits_and_features(test)
  out: dict[str, float] = {"num_samples": float(n)}
  out["accuracy"] = float(np.mean(gen_logits.argmax(-1) == labels))
  out["test_accuracy"] = float(np.mean(test_logits.argmax(-1) == dataset.test_labels))
  out.update(_distribution_metrics(gen, ref, test, gen_feats, ref_feats, test_feats, rng, k))
  out["diversity_ratio"] = diversity_ratio(gen_feats, labels, test_feats, dataset.test_labels)
  if joint_w1:
    # Sinkhorn is quadratic in the number of points: at most JOINT_W1_MAX_POINTS per side.
    cap = JOINT_W1_MAX_POINTS
    test_l, test_f = _subsample(rng, cap, dataset.test_labels, test_feats)
    scale = _mean_distance(test_f)
    k_cls = dataset.num_classes
    gen_w1 = _subsample(rng, cap, labels, gen_feats)
    ref_w1 = _subsample(rng, cap, ref_labels, ref_feats)
    out["joint_w1"] = _joint_w1(*gen_w1, test_l, test_f, scale, k_cls)
    out["joint_w1_real"] = _joint_w1(*ref_w1, test_l, test_f, scale, k_cls)
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
  gen = _check_images(generated, dataset.image_shape, "generated images")
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
  ref = to_float(dataset.train_images[_reference_rows(rng, len(dataset.train_images), n)])
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
  out.update(_distribution_metrics(gen, ref, test, gen_feats, ref_feats, test_feats, rng, k))
  return out


def _reference_rows(rng: np.random.Generator, num_train: int, n: int) -> np.ndarray:
  """n random train rows for a real-vs-real reference (with replacement only if needed)."""
  return rng.choice(num_train, n, replace=n > num_train)


def _distribution_metrics(gen, ref, test, gen_feats, ref_feats, test_feats, rng, k):
  """FD (net features and pooled pixels) and P/R of samples and of real train images.

  k-NN radii depend on set sizes: P/R compare equally many points, the same test points
  for the generated set and for its real reference.
  """
  out = {"fd": frechet_distance(gen_feats, test_feats)}
  out["fd_real"] = frechet_distance(ref_feats, test_feats)
  out["fd_ratio"] = out["fd"] / max(out["fd_real"], 1e-12)
  gen_pix, ref_pix, test_pix = pixel_features(gen), pixel_features(ref), pixel_features(test)
  out["fd_pixels"] = frechet_distance(gen_pix, test_pix)
  out["fd_pixels_real"] = frechet_distance(ref_pix, test_pix)
  out["fd_pixels_ratio"] = out["fd_pixels"] / max(out["fd_pixels_real"], 1e-12)
  m = min(len(gen_feats), len(test_feats))
  (test_m,) = _subsample(rng, m, test_feats)
  (gen_m,) = _subsample(rng, m, gen_feats)
  (ref_m,) = _subsample(rng, m, ref_feats)
  out["precision"], out["recall"] = precision_recall(test_m, gen_m, k=k)
  out["precision_real"], out["recall_real"] = precision_recall(test_m, ref_m, k=k)
  return out


def inception_metrics(
  generated: np.ndarray, dataset: Dataset, weights: str, *, seed: int = 0, k: int = 3
) -> dict[str, float]:
  """FID and improved precision/recall in FID's Inception-v3 pool features (2048-d).

  The samples and an equally large random subset of train images (the real-vs-real
  reference, `fid_inception_real`) are compared with the test split.

  Args:
    generated: (N, H, W, C) float32 [0, 1] samples.
    dataset: the run's data set.
    weights: path of the pytorch-fid Inception weights (`metrics.inception`).
    seed: seeds the reference subset.
    k: neighbour for precision/recall.
  """
  from lsdm_jax.metrics.inception import load_inception

  features = load_inception(weights)
  rng = np.random.default_rng(seed)
  n = len(generated)
  ref = to_float(dataset.train_images[_reference_rows(rng, len(dataset.train_images), n)])
  gen_f, ref_f = features(generated), features(ref)
  test_f = features(to_float(np.asarray(dataset.test_images)))
  out = {"fid_inception": frechet_distance(gen_f, test_f)}
  out["fid_inception_real"] = frechet_distance(ref_f, test_f)
  m = min(n, len(test_f))
  (test_m,) = _subsample(rng, m, test_f)
  (gen_m,) = _subsample(rng, m, gen_f)
  out["precision_inception"], out["recall_inception"] = precision_recall(test_m, gen_m, k=k)
  return out


def _mean_distance(feats: np.ndarray) -> float:
  """Mean pairwise Euclidean distance of (n, D) features, floored above 0."""
  f = np.asarray(feats, np.float64)
  sq = (f * f).sum(1)
  d = np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2 * f @ f.T, 0.0))
  return float(max(d.sum() / (len(f) * (len(f) - 1)), 1e-12))


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
  out_f = _check_images(outputs, targets.shape[1:], "super-resolved outputs")
  tgt_f = _check_images(targets, targets.shape[1:], "targets")
  h, w, c = targets.shape[1:]
  in_f = _check_images(inputs, (h // factor, w // factor, c), "low-resolution inputs")
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


def unpaired_reference(exp: Experiment) -> Dataset:
  """The data set seen from the run's unpaired images: they stand in for the test split.

  Scoring against them instead of the test split lets a user compare stage-2 settings
  without looking at the test images. The paper's stage 2 never sees them (only stage 1
  does, without labels); with `stage2.unpaired_weight > 0` G is trained towards them, so
  they are no longer held out from stage 2. The real-vs-real baselines use the paired
  images.

  Raises:
    DataError: the run is not class-conditional, or has fewer than 10 unpaired images.
  """
  ds, split = exp.dataset, exp.split
  if exp.task.cond_kind != "label":
    raise DataError("reference 'unpaired' scores class-conditional runs only; use 'test'")
  if len(split.unpaired) < 10:  # Too few for a covariance or k-nearest-neighbour radii.
    raise DataError(
      f"reference 'unpaired' needs at least 10 unpaired images; this run has "
      f"{len(split.unpaired)} (data.n_unpaired): use reference 'test'"
    )
  return dataclasses.replace(
    ds,
    train_images=ds.train_images[split.paired],
    train_labels=ds.train_labels[split.paired],
    test_images=ds.train_images[split.unpaired],
    test_labels=ds.train_labels[split.unpaired],
    train_index=ds.train_index[split.paired],
    test_index=ds.train_index[split.unpaired],
  )


def evaluate(lsdm: LSDM, exp: Experiment, config, reference: str = "test") -> dict[str, float]:
  """Every metric of a trained model on the canonical test split, as metrics.json holds them.

  classcond: `config.eval.num_per_class` samples per class scored by `evaluate_classcond`,
  with the bound's terms (`bound_metrics`). superres: one sample for each of the first
  `config.eval.num_inputs` test inputs scored by `evaluate_superres`, with the decoder's
  `recon_consistency` and the per-input spread (`superres_spread`). Both add
  `generate_seconds_per_1000`, timed on a second, compiled, call.

  `reference='unpaired'` scores class-conditional samples against the run's unpaired
  train images instead (`unpaired_reference`), for choosing settings without the test
  split; the bound's terms, which are about held-out data, are then left out.

  Returns:
    A flat dict of floats.
  """
  if reference not in REFERENCES:
    raise ConfigError(f"reference {reference!r} is not one of {REFERENCES}")
  scored = unpaired_reference(exp) if reference == "unpaired" else exp.dataset
  key = jax.random.key(config.eval.seed + 1)
  weights = config.eval.get("inception_weights", "")
  if exp.task.cond_kind == "attributes":
    ds = exp.dataset
    rows = np.arange(min(int(config.eval.num_inputs), len(ds.test_images)))
    requested = ds.test_attributes[rows]
    images = lsdm.generate(requested, key)
    t = time.perf_counter()  # Timed warm: the first call included compilation.
    jax.block_until_ready(lsdm.generate(requested, key))
    elapsed = time.perf_counter() - t
    net = load_or_train_classifier(ds, attributes=True)
    out = evaluate_attributes(images, requested, ds, net, seed=config.eval.seed)
    out["generate_seconds_per_1000"] = 1000.0 * elapsed / len(images)
    if weights:
      out.update(inception_metrics(images, ds, weights, seed=config.eval.seed))
    return {k: float(v) for k, v in out.items()}
  if exp.task.cond_kind == "label":
    net = load_or_train_classifier(exp.dataset)
    labels = np.repeat(np.arange(exp.task.num_classes), config.eval.num_per_class)
    images = lsdm.generate(labels, key)
    t = time.perf_counter()  # Timed again, warm: the first call included compilation.
    jax.block_until_ready(lsdm.generate(labels, key))
    elapsed = time.perf_counter() - t
    out = evaluate_classcond(images, labels, scored, net, seed=config.eval.seed)
    out["generate_seconds_per_1000"] = 1000.0 * elapsed / len(images)
    if reference == "test":
      out.update(bound_metrics(lsdm, exp.dataset, config))
    if weights:
      out.update(inception_metrics(images, scored, weights, seed=config.eval.seed))
    return {k: float(v) for k, v in out.items()}
  # Super-resolution: one sample per test input, scored against its true image.
  rows, inputs, targets = superres_test_inputs(exp, config.eval.num_inputs)
  outputs = lsdm.generate(inputs, key)
  t = time.perf_counter()  # Timed warm, as for classcond.
  jax.block_until_ready(lsdm.generate(inputs, key))
  elapsed = time.perf_counter() - t
  ds = exp.dataset
  # Feature metrics need a classifier of the data set; without labels or attributes, pixel
  # metrics only.
  net = None
  if ds.train_labels is not None and ds.num_classes > 1:
    net = load_or_train_classifier(ds)
  elif ds.train_attributes is not None:  # E.g. CelebA: its attribute classifier's features.
    net = load_or_train_classifier(ds, attributes=True)
  out = evaluate_superres(outputs, inputs, targets, exp.task.factor, net)
  if weights:
    out.update(inception_metrics(outputs, ds, weights, seed=config.eval.seed))
  out["num_samples"] = float(len(rows))
  out["generate_seconds_per_1000"] = 1000.0 * elapsed / len(rows)
  # The decoder's ceiling: how consistent stage 1's own reconstructions of the targets are.
  recon = np.asarray(lsdm.decode(lsdm.encode(targets)))
  out["recon_consistency"] = float(
    np.mean(image_metrics.consistency(recon, inputs, exp.task.factor))
  )
  spread = superres_spread(lsdm, exp, inputs[:SPREAD_INPUTS], jax.random.fold_in(key, 1))
  out.update({k: v for k, v in spread.items() if isinstance(v, float)})
  return {k: float(v) for k, v in out.items()}


def superres_spread(lsdm: LSDM, exp: Experiment, inputs: np.ndarray, key, path=None) -> dict:
  """`metrics.diversity.superres_spread` of the model's samples for `inputs`.

  The real spread comes from the train images (paired and unpaired) whose pooled
  versions are nearest to each input.

  Args:
    lsdm: the trained model.
    exp: the run's `train.Experiment`.
    inputs: (N, h, w, C) low-resolution conditions.
    key: the generator's key; `SPREAD_SAMPLES` samples are drawn per input.
    path: if given, a PNG of the 8 inputs where the model is most too sure (per column:
      the input, its samples, then the real neighbours).

  Returns:
    The dict of `metrics.diversity.superres_spread`.
  """
  from lsdm_jax.metrics.diversity import superres_spread as spread_of

  ds, n = exp.dataset, SPREAD_SAMPLES
  rows = np.concatenate([exp.split.paired, exp.split.unpaired])
  train_images = to_float(ds.train_images[rows])
  samples = np.asarray(lsdm.generate(inputs, key, n=n)).reshape(len(inputs), n, *ds.image_shape)
  out = spread_of(samples, inputs, train_images, exp.task.condition(train_images, None))
  if path is not None:
    worst = np.argsort(out["per_input"] / np.maximum(out["per_input_real"], 1e-12))[:8]
    f = exp.task.factor
    up = inputs[worst].repeat(f, axis=1).repeat(f, axis=2)
    columns = [up[None], samples[worst].transpose(1, 0, 2, 3, 4)]
    columns.append(train_images[out["neighbours"][worst]].transpose(1, 0, 2, 3, 4))
    grid = np.concatenate(columns).reshape(-1, *ds.image_shape)
    plots.save_grid(grid, 1 + 2 * n, path)
  return out


def bound_metrics(lsdm: LSDM, dataset: Dataset, config) -> dict[str, float]:
  """The terms of LSDM's bound on the test split, as `bound_*` metrics.

  bound_value = bound_reconstruction + max(1, bound_lipschitz) · bound_latent_w1, with the
  W1 in standardised latent units and the Lipschitz constant in pixels per such unit;
  bound_data_w1 is the left-hand side, the joint W1 of test data and samples in pixels
  (see `lsdm_jax.metrics.bound`).
  """
  from lsdm_jax.metrics.bound import bound_terms

  terms = bound_terms(lsdm, dataset, seed=config.eval.seed, max_points=BOUND_MAX_POINTS)
  return {f"bound_{k}": v for k, v in terms.items()}


def superres_test_inputs(exp: Experiment, num: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """The first min(num, test size) test images as (rows, low-res inputs, targets).

  `rows` index `dataset.test_images` (`dataset.test_index[rows]` are source rows); inputs
  are the targets average-pooled by the task's factor, all float32 in [0, 1].
  """
  rows = np.arange(min(int(num), len(exp.dataset.test_images)))
  targets = to_float(exp.dataset.test_images[rows])
  return rows, exp.task.condition(targets, None), targets


def write_attributes_grid(lsdm: LSDM, exp: Experiment, key, path, rows: int = 8, n: int = 8):
  """Writes a PNG of attribute-conditional samples and returns the grid.

  Each row: a test image, then `n` samples asked for that image's attribute vector.
  """
  ds = exp.dataset
  picks = np.linspace(0, len(ds.test_images) - 1, min(rows, len(ds.test_images))).astype(int)
  samples = np.asarray(lsdm.generate(ds.test_attributes[picks], key, n=n))
  real = to_float(ds.test_images[picks])[:, None]
  grid = np.concatenate([real, samples.reshape(len(picks), n, *ds.image_shape)], axis=1)
  return plots.save_grid(grid.reshape(-1, *ds.image_shape), len(picks), path)


def write_superres_grid(
  lsdm: LSDM, exp: Experiment, key, path, num_inputs: int = 8, n: int = 8
) -> np.ndarray:
  """Writes a PNG of super-resolved test images and returns the grid (`plots.save_grid`).

  Columns: `num_inputs` test images spread over the split; rows: the input (nearest-
  upsampled), `n` samples, the ground truth.
  """
  ds, f = exp.dataset, exp.task.factor
  rows = np.linspace(0, len(ds.test_images) - 1, min(num_inputs, len(ds.test_images)))
  targets = to_float(ds.test_images[rows.astype(int)])
  inputs = exp.task.condition(targets, None)
  samples = np.asarray(lsdm.generate(inputs, key, n=n)).reshape(len(targets), n, *targets.shape[1:])
  upsampled = inputs.repeat(f, axis=1).repeat(f, axis=2)
  grid = np.concatenate([upsampled[None], samples.transpose(1, 0, 2, 3, 4), targets[None]])
  return plots.save_grid(grid.reshape(-1, *targets.shape[1:]), n + 2, path)
