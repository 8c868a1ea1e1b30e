"""A trained LSDM model: E, D, G and the latent statistics, with jitted entry points.

model = lsdm_jax.load("runs/mnist5k")
images = model.generate(jnp.arange(10), jax.random.key(0))   # (10, 28, 28, 1)
z = model.encode(images); again = model.decode(z)
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from lsdm_jax import checkpoints, latents, parallel, sampling, stage1, stage2
from lsdm_jax import workdir as workdir_lib
from lsdm_jax.data.tasks import Task, make_task
from lsdm_jax.errors import CheckpointError
from lsdm_jax.models.autoencoder import Autoencoder, decode, encode_mean


@dataclasses.dataclass
class LSDM:
  """Holds a trained model. `params` is the pytree the jitted `generate_fn` takes."""

  config: ml_collections.ConfigDict
  task: Task
  image_shape: tuple[int, int, int]
  autoencoder: Autoencoder
  ae_params: dict
  generator_module: object
  params: dict
  mesh: jax.sharding.Mesh | None = None

  @functools.cached_property
  def generate_fn(self):
    """The raw jitted `generate(params, x, key)` (see `sampling.make_generate_fn`)."""
    decoder = self.autoencoder.make_decoder()
    return sampling.make_generate_fn(
      self.generator_module,
      decoder,
      self.config.stage2.noise_dim,
      self.mesh,
      self.task.factor,
      self.config.task.projection,
    )

  def generate(
    self, x, key: jax.Array, n: int | None = None, *, batch_size: int = 1000
  ) -> np.ndarray:
    """Images y = D(G(η, x)) for conditions x.

    Args:
      x: (B,) int labels for classcond, (B, K) attribute vectors in {0, 1}, or
        (B, h, w, c) low-resolution images in [0, 1]; a single condition (a scalar label,
        one (K,) vector or one (h, w, c) image) is repeated `n` times.
      key: PRNG key; the same key gives the same images.
      n: samples per condition (each condition repeated n times, consecutive rows).
      batch_size: rows per jitted call.

    Returns:
      (B·n, H, W, C) float32 in [0, 1].
    """
    x = np.asarray(x)
    single = x.ndim == len(self.task.cond_shape)
    if single:
      x = x[None]
    if n is not None:
      x = np.repeat(x, n, axis=0)
    x = x.astype(np.int32 if self.task.cond_kind == "label" else np.float32)
    multiple = self.mesh.shape[parallel.DATA] if self.mesh is not None else 1
    return sampling.generate_batched(
      self.generate_fn,
      self.params,
      x,
      key,
      batch_size=batch_size,
      multiple=multiple,
      mesh=self.mesh,
    )

  @functools.cached_property
  def _encode(self):
    return jax.jit(lambda p, y: encode_mean(self.autoencoder, p, y))

  @functools.cached_property
  def _decode(self):
    return jax.jit(lambda p, z: decode(self.autoencoder, p, z))

  def encode(self, images) -> jax.Array:
    """E(y): (B, H, W, C) in [0, 1] → (B, latent_dim) raw (not standardised) flat codes."""
    return self._encode(self.ae_params, jnp.asarray(images, jnp.float32))

  def decode(self, z) -> jax.Array:
    """D(z): (B, latent_dim) raw codes → (B, H, W, C) in [0, 1]."""
    return self._decode(self.ae_params, jnp.asarray(z, jnp.float32))


def build(
  config,
  task: Task,
  image_shape,
  ae_model,
  ae_params,
  s2: stage2.Stage2,
  gen_params,
  mean,
  std,
  mesh=None,
) -> LSDM:
  params = sampling.generation_params(gen_params, ae_params, mean, std)
  if mesh is not None:
    params = jax.device_put(params, parallel.replicated(mesh))
  return LSDM(config, task, tuple(image_shape), ae_model, ae_params, s2.generator, params, mesh)


def load(workdir: str | pathlib.Path, *, mesh=None) -> LSDM:
  """Loads a finished (or partly trained) run from its work directory.

  Args:
    workdir: the directory `experiments.main` wrote.
    mesh: optional device mesh to shard generation over; default: one device.

  Raises:
    CheckpointError / WorkdirError: when the run has no usable stage-1, latents or
      stage-2 checkpoint.
  """
  wd = pathlib.Path(workdir)
  config = workdir_lib.load_config(wd)
  meta = latents.read_meta(wd / "latents")
  if meta is None:
    raise CheckpointError(f"{str(wd)!r} has no latents yet: train it first with experiments.main")
  image_shape = tuple(meta["image_shape"])
  task = make_task(
    config.task.name,
    image_shape,
    meta["num_classes"],
    config.task.factor,
    len(meta.get("attribute_names", ())),
  )
  ae_model = stage1.make_model(config.stage1, image_shape, config.compute_dtype)
  init1 = functools.partial(
    stage1.init_state, ae_model, jax.random.key(0), config.stage1, image_shape
  )
  s1 = _restore(wd / "stage1", jax.eval_shape(init1), "stage1")
  one = parallel.make_mesh(1, 1) if mesh is None else mesh
  arrays, _ = _read_stats(wd, one)
  latent_shape = tuple(meta.get("latent_shape", (meta["latent_dim"],)))
  s2 = stage2.Stage2(config, task, int(meta["latent_dim"]), one, latent_shape=latent_shape)
  x_example = (
    jnp.zeros((1,), jnp.int32)
    if task.cond_kind == "label"
    else jnp.zeros((1, *task.cond_shape), jnp.float32)
  )
  st2 = _restore(wd / "stage2", jax.eval_shape(lambda: s2.init_state(x_example)), "stage2")
  return build(
    config,
    task,
    image_shape,
    ae_model,
    s1.params,
    s2,
    stage2.sampling_params(st2.params),
    arrays["mean"],
    arrays["std"],
    mesh,
  )


def _read_stats(wd, mesh):
  arrays, meta = latents.load(wd / "latents", mesh)
  return {"mean": np.asarray(arrays["mean"]), "std": np.asarray(arrays["std"])}, meta


def _restore(directory, abstract, what):
  abstract = jax.tree.map(
    lambda s: jax.ShapeDtypeStruct(
      s.shape, s.dtype, sharding=jax.sharding.SingleDeviceSharding(jax.devices()[0])
    ),
    abstract,
  )
  manager = checkpoints.make_manager(directory, save_every=1, keep=1, read_only=True)
  try:
    restored = checkpoints.restore_latest(manager, abstract, what=what)
  finally:
    manager.close()
  if restored is None:
    raise CheckpointError(f"no {what} checkpoint in {str(directory)!r}: train it first")
  return restored[0]
