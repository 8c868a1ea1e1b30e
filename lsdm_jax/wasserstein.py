"""W1 estimators for stage 2: a Lipschitz critic (Kantorovich–Rubinstein dual with a
gradient penalty) and the Sinkhorn divergence of OTT-JAX on minibatch point clouds.

Both compare *joint* samples (x, z). For the critic, real and generated samples share
the same x (the generator is fed the real batch's conditions), so the penalty is taken
in z. For Sinkhorn, a joint point is `concat(cond_scale · φ(x), z)` where φ(x) is the
one-hot label (or the flattened low-resolution image, scaled to unit RMS per pixel);
`cond_scale` sets how much moving mass across conditions costs compared to moving it
in latent space. A large scale makes transport stay within a class, i.e. it matches
the conditional laws one by one, which is what we want when the x-marginals are equal.

The critic's training is shared by stage 2 and the pixel-space baseline: `critic_fn`
evaluates a critic module with its condition embedded once per batch, `critic_phase`
runs the n_critic updates of a generator step in one `lax.scan`, and `generator_loss` is
the generator's side of the dual.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from ott.geometry import costs, geometry
from ott.tools import sinkhorn_divergence as sd

# z (B, d) -> f(x, z), (B,), for the batch's fixed conditions x. A critic function that
# also takes `stride=s` evaluates f(x[::s], z) for z of the batch's every s-th example;
# `critic_loss` uses that to estimate the gradient penalty on a subsample.
CriticFn = Callable[..., jax.Array]


def gradient_penalty(
  critic_fn: CriticFn, z_real: jax.Array, z_fake: jax.Array, key: jax.Array
) -> jax.Array:
  """E[(‖∇_z f(x, ẑ)‖ − 1)²] on random interpolates ẑ between real and fake latents.

  Args:
    critic_fn: z ↦ f(x, z), (B,), for the batch's conditions x, which real and fake
      latents share; examples must not interact (no batch statistics).
    z_real, z_fake: (B, d).
    key: PRNG key for the interpolation weights.
  """
  alpha = jax.random.uniform(key, (z_real.shape[0], 1), z_real.dtype)
  z_hat = alpha * z_real + (1.0 - alpha) * z_fake
  grads = jax.grad(lambda z: jnp.sum(critic_fn(z)))(z_hat)
  norms = jnp.sqrt(jnp.sum(grads**2, axis=-1) + 1e-12)
  return jnp.mean((norms - 1.0) ** 2)


def critic_loss(
  critic_fn: CriticFn,
  z_real: jax.Array,
  z_fake: jax.Array,
  key: jax.Array,
  gp_weight: float,
  gp_stride: int = 1,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """The critic's loss (to minimise) and its dual W1 estimate E f(real) − E f(fake).

  Real and generated latents share the batch's conditions x, so `critic_fn` is f(x, ·)
  with x fixed: a critic can compute its embedding of x once for all three evaluations
  (real, generated, interpolated).

  Args:
    gp_stride: estimate the penalty on every `gp_stride`-th example only (1: all; above
      1, `critic_fn` must accept `stride=`). The penalty is an expectation over
      interpolates, so a subsample is an unbiased estimate of it with more variance;
      its double backward pass is the costliest part of a critic update. A strided
      subsample keeps equal shares on every device of a batch split over `data` (when
      each device's share divides by the stride).
  """
  w1 = jnp.mean(critic_fn(z_real)) - jnp.mean(critic_fn(z_fake))
  s = gp_stride
  gp_fn = critic_fn if s == 1 else functools.partial(critic_fn, stride=s)
  gp = gradient_penalty(gp_fn, z_real[::s], z_fake[::s], key)
  return -w1 + gp_weight * gp, {"w1_critic": w1, "gradient_penalty": gp}


def critic_fn(critic, params, x: jax.Array | None) -> CriticFn:
  """(z, stride=1) ↦ f(x[::stride], z) for a critic module with `condition` and `head`
  methods, the condition's share computed once for the batch (x None: no condition)."""
  variables = {"params": params}
  cond = None if x is None else critic.apply(variables, x, method="condition")

  def f(z, stride=1):
    c = None if cond is None else cond[::stride]
    return critic.apply(variables, c, z, method="head")

  return f


def generator_loss(critic: CriticFn, fake: jax.Array) -> jax.Array:
  """−E f(x, G(η, x)): the generator's side of the dual, to minimise."""
  return -jnp.mean(critic(fake))


def critic_phase(
  loss_fn: Callable,
  tx: optax.GradientTransformation,
  params: dict,
  opt_state: dict,
  batches,
  key: jax.Array,
  num_updates: int,
  unroll: bool = False,
) -> tuple[dict, dict, dict[str, jax.Array], jax.Array]:
  """`num_updates` critic updates in one `lax.scan`, against a fixed generator.

  Args:
    loss_fn: (params, batch, key) → (loss, metrics) for one update.
    tx: the critics' optimiser, applied to each named tree of `params` on its own (each
      critic's gradient is clipped by its own norm).
    params, opt_state: {name: tree} of the critic(s).
    batches: a tree whose leaves stack the updates' batches on axis 0.
    key: split into one key per update.
    num_updates: the number of updates (n_critic).
    unroll: unroll the scan (see `stage2.unroll_scans`).

  Returns:
    (params, opt_state, the last update's metrics, whether every gradient was finite).
  """

  def one(carry, inputs):
    (cparams, copt), (batch, k) = carry, inputs
    (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(cparams, batch, k)
    new_p, new_o = {}, {}
    for name in cparams:
      updates, new_o[name] = tx.update(grads[name], copt[name], cparams[name])
      new_p[name] = optax.apply_updates(cparams[name], updates)
    finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves(grads)]))
    return (new_p, new_o), (metrics, finite)

  (params, opt_state), (metrics, finite) = jax.lax.scan(
    one, (params, opt_state), (batches, jax.random.split(key, num_updates)), unroll=unroll
  )
  return params, opt_state, jax.tree.map(lambda v: v[-1], metrics), jnp.all(finite)


def sinkhorn_divergence(
  a: jax.Array,
  b: jax.Array,
  *,
  epsilon: float,
  cost: str = "euclidean",
  max_iterations: int = 500,
  threshold: float = 1e-3,
  dense: bool = False,
) -> jax.Array:
  """Debiased Sinkhorn divergence S_ε(a, b) between uniform point clouds.

  With the Euclidean cost this is an entropic estimate of W1 (the debiasing removes
  the ε-blur bias to first order); with `sqeuclidean` it estimates W2².

  Args:
    a: (n, d) points.
    b: (m, d) points.
    epsilon: absolute entropic regularisation, in units of the cost.
    cost: 'euclidean' or 'sqeuclidean'.
    max_iterations, threshold: Sinkhorn solver stopping rule.
    dense: solve on dense Euclidean cost matrices (`euclidean_cost`) instead of point
      clouds: for wide points (images), where OTT's point clouds would hold an
      (n, m, d) array. Only with the Euclidean cost.
  """
  solve_kwargs = {"max_iterations": max_iterations, "threshold": threshold}
  # OTT relies on implicit rank promotion internally; allow it for its call only.
  with jax.numpy_rank_promotion("allow"):
    if dense:
      if cost != "euclidean":
        raise ValueError(f"dense costs are Euclidean, not {cost!r}")
      pairs = (euclidean_cost(a, b), euclidean_cost(a, a), euclidean_cost(b, b))
      div, _ = sd.sinkhorn_divergence(
        geometry.Geometry, *pairs, epsilon=epsilon, solve_kwargs=solve_kwargs
      )
      return div
    cost_fn = {"euclidean": costs.Euclidean, "sqeuclidean": costs.SqEuclidean}[cost]()
    div, _ = sd.sinkdiv(a, b, cost_fn=cost_fn, epsilon=epsilon, solve_kwargs=solve_kwargs)
  return div


def euclidean_cost(a: jax.Array, b: jax.Array, rows_per_step: int = 16) -> jax.Array:
  """(n, D), (m, D) → (n, m) Euclidean distances, exact, in row blocks.

  OTT's point clouds evaluate a non-squared cost pair by pair over an (n, m, D) array,
  which for image-sized D is gigabytes; the ‖a‖² + ‖b‖² − 2 a·b form loses the small
  distances to round-off in float32. A block of rows at a time is exact and small.
  """
  return jax.lax.map(
    lambda row: jnp.sqrt(jnp.sum(jnp.square(row[None] - b), axis=-1)), a, batch_size=rows_per_step
  )


_jit_divergence = jax.jit(
  sinkhorn_divergence, static_argnames=("epsilon", "cost", "max_iterations", "threshold", "dense")
)


def joint_w1(
  x_a,
  z_a,
  x_b,
  z_b,
  *,
  num_classes: int,
  cond_kind: str = "label",
  cond_scale: float = 1.0,
  epsilon: float,
  max_iterations: int = 2000,
  dense_above: int | None = None,
) -> float:
  """W1 between the joint clouds (x_a, z_a) and (x_b, z_b), by Sinkhorn divergence.

  Points are `joint_points(condition_features(x), z, cond_scale)` (one-hot labels, or
  attribute vectors / low-resolution images as in stage 2), compared with the Euclidean
  cost at an absolute ε: a fixed ε keeps numbers of different runs comparable; it should
  be small against the typical distance (scale z so that distances are O(1), or scale ε).
  The divergence is debiased (0 for equal clouds) and approaches W1 as ε → 0.

  Args:
    x_a: (N,) int labels or (N, ...) float conditions of the first cloud.
    z_a: (N, ...) its latents or features (flattened).
    x_b, z_b: the second cloud likewise (M rows, the same kind of condition).
    num_classes: K for one-hot labels.
    cond_kind: 'label', 'attributes' or 'image'.
    cond_scale: weight of the condition against z (a label change costs √2 · cond_scale).
    epsilon: entropic regularisation, absolute, in the units of z.
    max_iterations: Sinkhorn iterations (at most; it stops at a 1e-3 marginal error).
    dense_above: joint points wider than this are solved on dense cost matrices (None:
      always point clouds).

  Returns:
    The divergence as a Python float.
  """

  def points(x, z):
    phi = condition_features(jnp.asarray(x), cond_kind, num_classes)
    return joint_points(phi, jnp.asarray(z, jnp.float32).reshape(len(z), -1), cond_scale)

  a, b = points(x_a, z_a), points(x_b, z_b)
  if a.shape[1] != b.shape[1]:
    raise ValueError(f"joint points differ in width: {a.shape} vs {b.shape}")
  dense = dense_above is not None and a.shape[1] > dense_above
  with jax.numpy_rank_promotion("allow"):
    div = _jit_divergence(
      a, b, epsilon=float(epsilon), max_iterations=int(max_iterations), dense=dense
    )
  return float(np.asarray(div))


def condition_features(x: jax.Array, cond_kind: str, num_classes: int) -> jax.Array:
  """φ(x): one-hot labels, or attribute vectors / low-resolution images in ±1, flattened
  and divided by sqrt(#entries).

  The division gives φ a norm of order one whatever the number of attributes or pixels;
  `cond_scale` then weighs it against z in the same way for every kind of condition.
  """
  if cond_kind == "label":
    return jax.nn.one_hot(x, num_classes, dtype=jnp.float32)
  flat = x.reshape(x.shape[0], -1).astype(jnp.float32)
  return (2.0 * flat - 1.0) / jnp.sqrt(flat.shape[-1])


def joint_points(phi: jax.Array, z: jax.Array, cond_scale: float) -> jax.Array:
  """(B, k) condition features and (B, d) latents → (B, k + d) joint points."""
  return jnp.concatenate([cond_scale * phi, z], axis=-1)
