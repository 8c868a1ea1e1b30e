"""Stage 1: the latent space. Train E and D on all images, paired and unpaired.

Loss per image: reconstruction (Bernoulli log-likelihood, squared error or absolute error,
summed over pixels) plus an optional regulariser of the code: `kl` (VAE-style, β·KL to a
standard normal, with the reparameterised sample fed to D, which also makes D smooth
around the codes, keeping Lip(D) in the paper's bound small) or `l2` (β·‖z‖²).

Two autoencoders (`stage1.arch`): `conv`, the flat-latent `Autoencoder`, and `resnet`, the
spatial-latent `ResnetAutoencoder` of latent diffusion. With `disc_weight` > 0 (resnet)
a PatchGAN discriminator joins from step `disc_start`: hinge loss for the discriminator,
−disc_weight·mean D(D(z)) added to the autoencoder's loss (latent diffusion's
`LPIPSWithDiscriminator` with a fixed weight and no perceptual term). One optimiser
updates both; each loss reaches only its own network's parameters.
"""

from __future__ import annotations

import functools
import pathlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from lsdm_jax import checkpoints, loop, parallel
from lsdm_jax import config as config_lib
from lsdm_jax.data import pipeline
from lsdm_jax.data.sources import to_float
from lsdm_jax.errors import ConfigError
from lsdm_jax.models import autoencoder, resnet
from lsdm_jax.models.autoencoder import Autoencoder
from lsdm_jax.models.resnet import ResnetAutoencoder

ARCHS = ("conv", "resnet")
LOSSES = ("bce", "mse", "l1")
REGULARIZERS = ("none", "l2", "kl")


def check_config(config: ml_collections.ConfigDict) -> None:
  """Checks the `stage1` section: its choices, what the discriminator needs, the loop's
  counts, and that the batch splits over the mesh's data axis."""
  cfg = config.stage1
  config_lib.check_choice(cfg.arch, ARCHS, "stage1.arch")
  config_lib.check_choice(cfg.decoder, autoencoder.DECODERS, "stage1.decoder")
  config_lib.check_choice(cfg.loss, LOSSES, "stage1.loss")
  config_lib.check_choice(cfg.regularizer, REGULARIZERS, "stage1.regularizer")
  loop.check_optimizer(cfg, "stage1")
  if cfg.disc_weight > 0 and cfg.arch != "resnet":
    raise ConfigError("stage1.disc_weight > 0 needs stage1.arch='resnet'")
  loop.LoopConfig.from_config("stage1", cfg).validate("stage1")
  mesh = parallel.make_mesh(config.mesh.data, config.mesh.model)
  parallel.check_batch_size(cfg.batch_size, mesh, "stage1.batch_size")


def check_image_shape(cfg: ml_collections.ConfigDict, image_shape) -> None:
  """Raises ConfigError unless the autoencoder of `cfg` (config.stage1) takes the images."""
  if cfg.arch == "conv":
    autoencoder.check_image_shape(image_shape, len(cfg.features))
  else:
    resnet.check_image_shape(image_shape, cfg.ch_mult)


def make_model(
  cfg: ml_collections.ConfigDict, image_shape, compute_dtype: str = "float32"
) -> Autoencoder | ResnetAutoencoder:
  """The stage-1 autoencoder of `cfg` (config.stage1) for images of `image_shape`."""
  if cfg.arch == "resnet":
    return ResnetAutoencoder(
      image_shape=tuple(image_shape),
      ch=cfg.ch,
      ch_mult=tuple(cfg.ch_mult),
      num_res_blocks=cfg.num_res_blocks,
      z_channels=cfg.z_channels,
      attention=cfg.attention,
      variational=cfg.regularizer == "kl",
      dtype=jnp.dtype(compute_dtype),
      discriminator=cfg.disc_weight > 0,
      disc_features=cfg.disc_features,
      disc_layers=cfg.disc_layers,
    )
  return Autoencoder(
    image_shape=tuple(image_shape),
    latent_dim=cfg.latent_dim,
    features=tuple(cfg.features),
    hidden=cfg.hidden,
    variational=cfg.regularizer == "kl",
    decoder_kind=cfg.decoder,
    decoder_widths=tuple(cfg.decoder_widths),
  )


def init_state(model, tx: optax.GradientTransformation, key: jax.Array, image_shape):
  """The initial `loop.TrainState` of `model` for images of `image_shape` (H, W, C)."""
  params = model.init(key, jnp.zeros((1, *image_shape), jnp.float32))["params"]
  return loop.TrainState.create(params, tx.init(params))


def loss_fn(model, cfg, params, images: jax.Array, key: jax.Array, step=0):
  """Per-batch loss and metrics. images: (B, H, W, C) float32 in [0, 1]."""
  out = model.apply({"params": params}, images, method="encode")
  if cfg.regularizer == "kl":
    mu, logvar = out
    logvar = jnp.clip(logvar, -12.0, 6.0)
    z = mu + jnp.exp(0.5 * logvar) * jax.random.normal(key, mu.shape)
    reg = 0.5 * jnp.sum(mu**2 + jnp.exp(logvar) - 1.0 - logvar, axis=-1)
  else:
    z = out
    reg = jnp.sum(z**2, axis=-1) if cfg.regularizer == "l2" else jnp.zeros(z.shape[:1])
  logits = model.apply({"params": params}, z, method="decode_logits")
  axes = tuple(range(1, images.ndim))
  if cfg.loss == "bce":
    recon = jnp.sum(optax.sigmoid_binary_cross_entropy(logits, images), axis=axes)
  elif cfg.loss == "mse":
    recon = jnp.sum((jax.nn.sigmoid(logits) - images) ** 2, axis=axes)
  else:
    recon = jnp.sum(jnp.abs(jax.nn.sigmoid(logits) - images), axis=axes)
  loss = jnp.mean(recon + cfg.reg_weight * reg)
  mae = jnp.mean(jnp.abs(jax.nn.sigmoid(logits) - images))
  metrics = {"recon": jnp.mean(recon), "reg": jnp.mean(reg), "pixel_mae": mae}
  if cfg.disc_weight > 0:
    adv, disc_loss, disc_metrics = _adversarial(model, params, images, jax.nn.sigmoid(logits))
    on = (step >= cfg.disc_start).astype(jnp.float32)
    loss = loss + on * cfg.disc_weight * adv
    metrics.update(disc_metrics)
    metrics["loss"] = loss
    return loss + on * disc_loss, metrics
  return loss, {"loss": loss, **metrics}


def _adversarial(model, params, real: jax.Array, fake: jax.Array):
  """(autoencoder's adversarial loss, discriminator's hinge loss, metrics).

  The first reaches only the autoencoder's parameters, the second only the
  discriminator's, so their sum can be differentiated once for both networks.
  """
  frozen = {**params, "disc": jax.lax.stop_gradient(params["disc"])}
  adv = -jnp.mean(model.apply({"params": frozen}, fake, method="discriminate"))
  alone = {**jax.lax.stop_gradient(params), "disc": params["disc"]}
  d_real = model.apply({"params": alone}, real, method="discriminate")
  d_fake = model.apply({"params": alone}, jax.lax.stop_gradient(fake), method="discriminate")
  hinge = 0.5 * (jnp.mean(jax.nn.relu(1.0 - d_real)) + jnp.mean(jax.nn.relu(1.0 + d_fake)))
  return adv, hinge, {"adv_loss": adv, "disc_loss": hinge}


def make_train_step(model, tx, cfg, mesh, shardings, base_key):
  """A jitted, sharded (state, images) → (state, metrics); the state is donated."""

  def train_step(state: loop.TrainState, images: jax.Array):
    key = jax.random.fold_in(base_key, state.step)
    grad_fn = jax.value_and_grad(functools.partial(loss_fn, model, cfg), has_aux=True)
    (_, metrics), grads = grad_fn(state.params, images, key, state.step)
    params, opt_state = loop.apply_gradients(tx, grads, state.opt_state, state.params)
    finite = loop.all_finite(metrics["loss"], grads)
    cond = loop.conditional_update(cfg.arch == "resnet")
    return loop.guarded_update(state, finite, params, opt_state, conditional=cond), metrics

  return jax.jit(
    train_step,
    in_shardings=(shardings, parallel.data_sharding(mesh)),
    out_shardings=(shardings, parallel.replicated(mesh)),
    donate_argnums=0,
  )


def train(config: ml_collections.ConfigDict, images: np.ndarray, mesh, workdir) -> tuple:
  """Trains (or resumes, or skips if finished) stage 1 on `images` (N, H, W, C).

  Returns:
    (model, params, history).
  """
  cfg = config.stage1
  model = make_model(cfg, images.shape[1:], config.compute_dtype)
  tx = loop.make_optimizer(cfg)
  root = jax.random.key(config.seed)
  init_key, base_key = jax.random.split(jax.random.fold_in(root, 1))
  init = functools.partial(init_state, model, tx, init_key, images.shape[1:])
  state, shardings = parallel.create_sharded(init, mesh)
  step_fn = make_train_step(model, tx, cfg, mesh, shardings, base_key)
  # This process loads only the rows of each global batch that its own devices hold.
  rows = parallel.process_rows(parallel.data_sharding(mesh), cfg.batch_size)
  data_seed = int(jax.random.randint(jax.random.fold_in(root, 2), (), 0, 2**31 - 1))

  def batch_fn(step: int):
    idx = pipeline.batch_indices(len(images), cfg.batch_size, data_seed, step)[rows]
    return parallel.global_batch(mesh, to_float(images[idx]), cfg.batch_size)

  if config.data.get("streaming", False):
    # The same rows, read and decoded ahead by grain (closed after the last step).
    stream = pipeline.StepBatches(
      images,
      cfg.batch_size,
      data_seed,
      rows,
      cfg.steps,
      workers=config.data.workers,
      prefetch=config.data.prefetch,
    )

    def batch_fn(step: int):
      return parallel.global_batch(mesh, stream(step), cfg.batch_size)

  loop_cfg = loop.LoopConfig.from_config("stage1", cfg)
  manager = checkpoints.make_manager(
    pathlib.Path(workdir) / "stage1", save_every=cfg.save_every, keep=cfg.keep
  )
  meta = {"config": config_lib.fingerprint(cfg), "image_shape": list(images.shape[1:])}
  state, history = loop.run(loop_cfg, state, step_fn, batch_fn, manager, meta)
  manager.close()
  return model, state.params, history
