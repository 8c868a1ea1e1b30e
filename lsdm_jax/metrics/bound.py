"""The terms of LSDM's error bound, measured on the held-out test split.

For the joint law of data (x, y) and of the model (x, D(G(η, x))), the paper bounds

    W1(data, model) ≤ E‖D(E(y)) − y‖ + Lip(D) · W1((x, E(y)), (x, G(η, x))),

the first term by the identity coupling of y with its reconstruction, the second because
(x, z) ↦ (x, D(z)) moves no point further than Lip(D) times as far (the label coordinate
is left unchanged, so the constant of that map is max(1, Lip(D))). `bound_terms` measures
each term for a trained `LSDM`, with everything in one set of units:

* pixels: images in [0, 1], distances the Euclidean norm over all H·W·C pixels;
* latents: *standardised* codes (z − mean) / std with the model's stored statistics, the
  space in which G is trained and in which the latent W1 is measured. D itself takes raw
  codes, so the Lipschitz constant is that of z_s ↦ D(mean + std ⊙ z_s): pixel units per
  standardised latent unit (`lipschitz_decoder(..., mean=None, std=None)` gives it per
  raw unit instead);
* joint points: concat(cond_scale · onehot(x), z), as in stage 2's Sinkhorn estimator, so
  moving mass across classes costs √2 · cond_scale and transport stays within a class.

W1 values are debiased Sinkhorn divergences (OTT-JAX, Euclidean cost) at an absolute
ε = 0.05 in the units above: about 1% of a typical within-class distance (~5 for 16-d
standardised latents, ~9 for 28x28 digits). There it is within 1% of the exact W1 of the
two clouds (1,000 16-d joint latents, against an exact assignment), where ε = 0.5 already
gives half of it. They are W1 between *finite* clouds: two independent samples of one law,
N points each in d dimensions, are far apart (of order N^(-1/d)), so `latent_w1_real`
gives the same distance between the test latents and as many encoded *train* images (same
classes): the floor a perfect generator would reach. The Lipschitz constant is a sampled
estimate (a lower bound on the true constant): the largest Jacobian spectral norm over
encoded test images and points between them; with it the value is an estimate of the
bound, not a certificate.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from lsdm_jax import wasserstein
from lsdm_jax.data.sources import Dataset, to_float
from lsdm_jax.errors import DataError
from lsdm_jax.metrics.scores import reference_rows
from lsdm_jax.models.autoencoder import Autoencoder
from lsdm_jax.models.generator import noise_per_row

DEFAULT_EPSILON = 0.05
DEFAULT_MAX_POINTS = 1000
DEFAULT_NUM_LIPSCHITZ = 256
DEFAULT_POWER_ITERATIONS = 10
SINKHORN_ITERATIONS = 2000
# Joint points wider than this (images) go through dense cost matrices (`euclidean_cost`).
POINT_CLOUD_MAX_DIM = 128


# --------------------------------------------------------------------------- reconstruction


def reconstruction_error(images: np.ndarray, reconstructions: np.ndarray) -> float:
  """Mean over images of ‖D(E(y)) − y‖₂ (all pixels, [0, 1] scale).

  The identity coupling of each image with its reconstruction, so an upper bound on their
  W1 (and on the joint W1 of (x, y) and (x, D(E(y))), which keeps each x).

  Args:
    images: (N, H, W, C) uint8 or float32 in [0, 1].
    reconstructions: (N, H, W, C) float32 in [0, 1].

  Returns:
    The mean distance, as a Python float.
  """
  y = to_float(np.asarray(images)).reshape(len(images), -1).astype(np.float64)
  r = np.asarray(reconstructions, np.float64).reshape(len(reconstructions), -1)
  if y.shape != r.shape:
    raise DataError(f"images {y.shape} and reconstructions {r.shape} must pair up")
  return float(np.mean(np.linalg.norm(r - y, axis=1)))


# --------------------------------------------------------------------------- Lipschitz


def jacobian_spectral_norm(
  fn: Callable[[jax.Array], jax.Array],
  z: jax.Array,
  key: jax.Array,
  *,
  num_iterations: int = DEFAULT_POWER_ITERATIONS,
) -> jax.Array:
  """‖J_fn(z_i)‖₂ for every row z_i, by power iteration on JᵀJ.

  `fn` is linearised once (`jax.linearize`: one forward pass); each iteration is one
  Jacobian-vector product and its transpose (a vector-Jacobian product). The estimate
  ‖J v‖ with ‖v‖ = 1 never exceeds the true norm and rises to it geometrically, at the
  rate (σ₂/σ₁)² per iteration.

  Args:
    fn: maps (B, d) to (B, ...) row by row (rows must not interact: no batch statistics).
    z: (B, d) points.
    key: PRNG key for the starting vectors.
    num_iterations: power iterations.

  Returns:
    (B,) spectral norms, in output units per input unit.
  """

  def unit(v):
    norms = jnp.sqrt(jnp.sum(v * v, axis=-1, keepdims=True))
    return v / jnp.maximum(norms, 1e-30)

  _, jvp = jax.linearize(fn, z)
  vjp = jax.linear_transpose(jvp, z)
  v = unit(jax.random.normal(key, z.shape, z.dtype))
  v = jax.lax.fori_loop(0, num_iterations, lambda _, v: unit(vjp(jvp(v))[0]), v)
  jv = jvp(v).reshape(z.shape[0], -1)
  return jnp.sqrt(jnp.sum(jv * jv, axis=-1))


@functools.partial(jax.jit, static_argnames=("autoencoder", "num_iterations"))
def _decoder_norms(autoencoder, decoder_params, z, mean, std, key, num_iterations):
  def fn(zs):
    return autoencoder.apply(
      {"params": {"decoder": decoder_params}}, mean[None] + std[None] * zs, method="decode"
    )

  return jacobian_spectral_norm(fn, z, key, num_iterations=num_iterations)


def lipschitz_decoder(
  autoencoder: Autoencoder,
  decoder_params,
  z: np.ndarray | jax.Array,
  key: jax.Array,
  *,
  mean: np.ndarray | jax.Array | None = None,
  std: np.ndarray | jax.Array | None = None,
  num_interpolates: int | None = None,
  num_iterations: int = DEFAULT_POWER_ITERATIONS,
) -> float:
  """Estimate of Lip(D): the largest Jacobian spectral norm of the decoder over samples.

  The samples are the rows of `z` and `num_interpolates` points on segments between
  random pairs of them (where a Lipschitz bound along the segment is what W1 needs).

  Args:
    autoencoder: the stage-1 model (its `decode`, sigmoid included, is the map D).
    decoder_params: `ae_params['decoder']`.
    z: (N, d) latents, e.g. codes of test images, in the units of `mean`/`std`.
    key: PRNG key (pairs, interpolation weights, power-iteration starts).
    mean, std: (d,) latent statistics. Given, z is standardised and the constant is that
      of z_s ↦ D(mean + std ⊙ z_s), per standardised unit; omitted, z holds raw codes and
      the constant is D's own.
    num_interpolates: points between pairs (default: N).
    num_iterations: power iterations per point.

  Returns:
    The maximum norm, in pixel units ([0, 1] scale, L2 over all pixels) per latent unit.
  """
  z = jnp.asarray(z, jnp.float32)
  d = z.shape[1]
  mean = jnp.zeros((d,), jnp.float32) if mean is None else jnp.asarray(mean, jnp.float32)
  std = jnp.ones((d,), jnp.float32) if std is None else jnp.asarray(std, jnp.float32)
  m = len(z) if num_interpolates is None else int(num_interpolates)
  k_pairs, k_t, k_power = jax.random.split(key, 3)
  if m > 0:
    pairs = jax.random.randint(k_pairs, (2, m), 0, len(z))
    t = jax.random.uniform(k_t, (m, 1))
    z = jnp.concatenate([z, t * z[pairs[0]] + (1.0 - t) * z[pairs[1]]])
  norms = _decoder_norms(autoencoder, decoder_params, z, mean, std, k_power, num_iterations)
  return float(jnp.max(norms))


# --------------------------------------------------------------------------- latent W1


# --------------------------------------------------------------------------- all terms


@functools.partial(jax.jit, static_argnames=("generator", "noise_dim"))
def _generate_latents(generator, gen_params, x, key, noise_dim):
  """G(η, x) with η for row i from fold_in(key, i), as `sampling.make_generate_fn` draws it."""
  return generator.apply({"params": gen_params}, noise_per_row(key, x.shape[0], noise_dim), x)


@functools.partial(jax.jit, static_argnames=("autoencoder",))
def _decode_standardised(autoencoder, decoder_params, z, mean, std):
  return autoencoder.apply(
    {"params": {"decoder": decoder_params}}, mean[None] + std[None] * z, method="decode"
  )


def bound_terms(
  lsdm,
  dataset: Dataset,
  *,
  seed: int = 0,
  max_points: int = DEFAULT_MAX_POINTS,
  num_lipschitz: int = DEFAULT_NUM_LIPSCHITZ,
  num_iterations: int = DEFAULT_POWER_ITERATIONS,
  epsilon: float = DEFAULT_EPSILON,
  cond_scale: float | None = None,
) -> dict[str, float]:
  """Every term of the bound for a trained model, on the data set's test split.

  Args:
    lsdm: a trained `lsdm_jax.model.LSDM` (`lsdm_jax.load(workdir)`).
    dataset: the run's data set; its test split is used (train images only for the
      `latent_w1_real` reference).
    seed: seeds the test subset, η, the reference rows and the Lipschitz samples.
    max_points: test images used (a random subset if the split is larger); Sinkhorn
      costs grow as its square.
    num_lipschitz: encoded test images at which the Jacobian norm is taken, plus as many
      points between random pairs of them.
    num_iterations: power iterations per Jacobian norm.
    epsilon: Sinkhorn ε (absolute; standardised latent units, or pixel units).
    cond_scale: label weight in the joint points (default: the run's stage2.cond_scale).

  Returns:
    A dict of floats:
      reconstruction: mean ‖D(E(y)) − y‖₂ over the test images (pixels in [0, 1]).
      reconstruction_w1: Sinkhorn W1 of the joint clouds (x, y) and (x, D(E(y))) (≤ the
        above up to the estimator's error).
      latent_w1: Sinkhorn W1 of (x, E(y)) and (x, G(η, x)) for the test conditions x, in
        standardised latent units.
      latent_w1_real: the same for (x, E(y)) and as many encoded train images of the same
        classes: the finite-sample floor of `latent_w1`.
      lipschitz: estimated Lip(D), pixel units per standardised latent unit.
      value: reconstruction + max(1, lipschitz) · latent_w1, the bound's right-hand side.
      data_w1: Sinkhorn W1 of (x, y) and (x, D(G(η, x))) in pixels, its left-hand side.
      num_points: test images used.
  """
  if len(dataset.test_images) < 2:
    raise DataError(f"data set {dataset.name!r} has fewer than 2 test images")
  task = lsdm.task
  cond_scale = float(lsdm.config.stage2.cond_scale if cond_scale is None else cond_scale)
  rng = np.random.default_rng(seed)
  key = jax.random.key(seed)
  k_eta, k_lip = jax.random.split(key)
  n_test = len(dataset.test_images)
  rows = np.sort(rng.choice(n_test, min(n_test, max_points), replace=False))
  images = to_float(dataset.test_images[rows])
  labels = None if dataset.test_labels is None else dataset.test_labels[rows]
  x = task.condition(images, labels)

  params = jax.tree.map(np.asarray, lsdm.params)
  mean, std = params["mean"], params["std"]
  decoder_params = params["decoder"]

  def standardised_codes(y):
    return (np.asarray(lsdm.encode(y)) - mean[None]) / std[None]

  z_real = standardised_codes(images)
  recon = np.asarray(_decode_standardised(lsdm.autoencoder, decoder_params, z_real, mean, std))
  z_gen = np.asarray(
    _generate_latents(
      lsdm.generator_module, params["generator"], x, k_eta, int(lsdm.config.stage2.noise_dim)
    )
  )
  generated = np.asarray(_decode_standardised(lsdm.autoencoder, decoder_params, z_gen, mean, std))

  # Joint clouds (x, z) or (x, y): point clouds for latent-sized points, as stage 2's own
  # estimator, dense cost matrices for images.
  w1 = functools.partial(
    wasserstein.joint_w1,
    num_classes=task.num_classes,
    cond_scale=cond_scale,
    cond_kind=task.cond_kind,
    epsilon=epsilon,
    max_iterations=SINKHORN_ITERATIONS,
    dense_above=POINT_CLOUD_MAX_DIM,
  )
  out = {"num_points": float(len(rows))}
  out["reconstruction"] = reconstruction_error(images, recon)
  out["reconstruction_w1"] = w1(x, images, x, recon)
  out["latent_w1"] = w1(x, z_real, x, z_gen)
  by_class = task.cond_kind == "label"
  ref_rows = reference_rows(
    rng,
    len(dataset.train_images),
    len(rows),
    labels if by_class else None,
    dataset.train_labels if by_class else None,
  )
  ref_images = to_float(dataset.train_images[ref_rows])
  ref_labels = None if dataset.train_labels is None else dataset.train_labels[ref_rows]
  out["latent_w1_real"] = w1(
    x, z_real, task.condition(ref_images, ref_labels), standardised_codes(ref_images)
  )
  lip_rows = rng.choice(len(z_real), min(len(z_real), num_lipschitz), replace=False)
  out["lipschitz"] = lipschitz_decoder(
    lsdm.autoencoder,
    decoder_params,
    z_real[lip_rows],
    k_lip,
    mean=mean,
    std=std,
    num_iterations=num_iterations,
  )
  out["value"] = out["reconstruction"] + max(1.0, out["lipschitz"]) * out["latent_w1"]
  out["data_w1"] = w1(x, images, x, generated)
  return out
