"""One-step generation: y = D(G(η, x)) in a single jitted call.

`make_generate_fn` returns `generate(params, x, key)`; `params` holds the generator's
parameters, the decoder's and the latent statistics, so the function is pure. Noise for
row i is drawn from `fold_in(key, i)`, so a sample depends on its key and row, not on
how many rows are generated together.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lsdm_jax import parallel
from lsdm_jax.data.tasks import block_mean
from lsdm_jax.models.generator import Generator, noise_per_row


def generation_params(gen_params, ae_params, mean, std) -> dict:
  """The pytree `generate` takes."""
  return {
    "generator": gen_params,
    "decoder": ae_params["decoder"],
    "mean": jnp.asarray(mean),
    "std": jnp.asarray(std),
  }


def project_to_input(images: jax.Array, x: jax.Array, factor: int, amount: float = 1.0):
  """Moves each factor×factor block of `images` by `amount` of the way towards mean x's
  pixel there (amount 1: the orthogonal projection onto images that average-pool to x),
  then clips to [0, 1]."""
  shift = jnp.repeat(jnp.repeat(x - block_mean(images, factor), factor, axis=1), factor, axis=2)
  return jnp.clip(images + amount * shift, 0.0, 1.0)


def make_generate_fn(
  generator: Generator,
  decoder: nn.Module,
  noise_dim: int,
  mesh=None,
  project_factor: int = 0,
  projection: float = 0.0,
):
  """Returns the jitted `generate(params, x, key) -> images (B, H, W, C) in [0, 1]`.

  With a mesh, x and the output are sharded over `data` (B must divide by its size;
  `generate_batched` pads for you) and params are replicated. With `projection` γ > 0
  (superres, `task.projection`), decoded images move γ of the way to those whose
  `project_factor`×`project_factor` average pooling is x (`project_to_input`).
  """

  def generate(params, x, key):
    eta = noise_per_row(key, x.shape[0], noise_dim)
    z = generator.apply({"params": params["generator"]}, eta, x)
    z = z * params["std"][None] + params["mean"][None]
    images = jax.nn.sigmoid(decoder.apply({"params": params["decoder"]}, z))
    if projection > 0:
      return project_to_input(images, x, project_factor, projection)
    return images

  if mesh is None:
    return jax.jit(generate)
  return jax.jit(
    generate,
    in_shardings=(
      parallel.replicated(mesh),
      parallel.data_sharding(mesh),
      parallel.replicated(mesh),
    ),
    out_shardings=parallel.data_sharding(mesh),
  )


def generate_batched(
  generate_fn,
  params,
  x: np.ndarray,
  key: jax.Array,
  *,
  batch_size: int = 1000,
  multiple: int = 1,
  mesh=None,
) -> np.ndarray:
  """Generates for any number of conditions, in padded chunks; returns host float32.

  Chunk c uses `fold_in(key, c)`, so results depend on `batch_size` but are
  deterministic for a fixed key, and do not depend on the mesh.

  Args:
    generate_fn: from `make_generate_fn` (with `mesh`, if one is given here).
    params: its parameters.
    x: (N, ...) conditions, the same on every process.
    key: PRNG key.
    batch_size: rows per jitted call.
    multiple: chunks are padded to a multiple of this (the data axis size).
    mesh: the generate function's mesh. Given, each process passes in only the rows its
      devices hold, and the images are gathered to every host: the way to generate when
      the mesh spans several processes (all of them must call this).
  """
  if mesh is not None:
    multiple = int(np.lcm(multiple, mesh.shape[parallel.DATA]))
  out = []
  for c, start in enumerate(range(0, len(x), batch_size)):
    xb = np.asarray(x[start : start + batch_size])
    n = len(xb)
    pad = (-n) % multiple
    if pad:
      xb = np.concatenate([xb, np.repeat(xb[-1:], pad, axis=0)])
    if mesh is not None:
      rows = parallel.process_rows(parallel.data_sharding(mesh), len(xb))
      xb = parallel.global_batch(mesh, xb[rows], len(xb))
    images = generate_fn(params, xb, jax.random.fold_in(key, c))
    parallel.dispatch_barrier(images)
    out.append(parallel.to_host(images)[:n])
  return np.concatenate(out)
