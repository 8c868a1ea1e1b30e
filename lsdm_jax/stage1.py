"""Stage 1: the latent space. Train E and D on all images, paired and unpaired.

Loss per image: reconstruction (Bernoulli log-likelihood, squared error or absolute error,
summed over pixels) plus an optional regulariser of the code: `kl` (VAE-style, β·KL to a
standard normal, with the reparameterised sample fed to D, which also makes D smooth
around the codes, keeping Lip(D) in the paper's bound small) or `l2` (β·‖z‖²).

Two autoencoders (`stage1.arch`): `conv`, the flat-latent `Autoencoder`, and `resnet`, the
spatial-latent `ResnetAutoencoder` of latent diffusion, which trains as latent diffusion's
KL autoencoders do (`LPIPSWithDiscriminator`, Rombach et al. 2022):

* `l1` is measured on images in [−1, 1], latent diffusion's scale (2·|ŷ − y| on our [0, 1]
  images), so its published weights keep their balance;
* `perceptual_weight` > 0 adds that weight times the LPIPS (VGG) distance of y and ŷ to
  every pixel's term, as latent diffusion does, i.e. weight · LPIPS · H·W·C per image
  (`metrics.lpips`; the weights file `lpips_weights` is made once, see `check_config`);
* with `disc_weight` > 0 a PatchGAN discriminator joins from step `disc_start`: hinge loss
  for the discriminator, and −λ·mean D(ŷ) for the autoencoder with the adaptive weight
  λ = disc_weight · ‖∇_L nll‖ / (‖∇_L adv‖ + 1e-4), clipped to [0, 10⁴], the gradient
  norms taken at the decoder's last layer L (`adaptive_weight`). The discriminator has
  its own optimiser (the section's settings, its own state and clipping).
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from lsdm_jax import checkpoints, loop, parallel
from lsdm_jax import config as config_lib
from lsdm_jax.data import pipeline
from lsdm_jax.data.sources import to_float_jax
from lsdm_jax.errors import ConfigError, DataError
from lsdm_jax.metrics import lpips
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
  if cfg.perceptual_weight > 0 and not pathlib.Path(cfg.lpips_weights).is_file():
    raise DataError(
      f"stage1.perceptual_weight={cfg.perceptual_weight} needs the LPIPS (VGG) weights, and "
      f"stage1.lpips_weights={cfg.lpips_weights!r} is not a file: make it once where torch, "
      f"torchvision and lpips are installed ({lpips.EXPORT}) and pass "
      "--config.stage1.lpips_weights=lpips_vgg.npz, or set --config.stage1.perceptual_weight=0"
    )
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


def make_optimizer(cfg: ml_collections.ConfigDict, params) -> optax.GradientTransformation:
  """The section's optimiser; with a discriminator (params['disc']) one for it and one for
  the autoencoder, each with its own state and gradient clipping (`params`: a tree of the
  parameters, or of their shapes)."""
  if "disc" not in params:
    return loop.make_optimizer(cfg)
  labels = {name: "disc" if name == "disc" else "autoencoder" for name in params}
  txs = {"autoencoder": loop.make_optimizer(cfg), "disc": loop.make_optimizer(cfg)}
  return optax.multi_transform(txs, labels)


def init_state(model, key: jax.Array, cfg: ml_collections.ConfigDict, image_shape):
  """The initial `loop.TrainState` of `model` for images of `image_shape` (H, W, C)."""
  params = model.init(key, jnp.zeros((1, *image_shape), jnp.float32))["params"]
  return loop.TrainState.create(params, make_optimizer(cfg, params).init(params))


def reconstruction(cfg, logits: jax.Array, images: jax.Array, perceptual=None) -> jax.Array:
  """(B,) reconstruction term of each image: `cfg.loss` summed over pixels (`l1` on the
  [−1, 1] scale), plus perceptual_weight · LPIPS(y, ŷ) · H·W·C with `perceptual` (an
  `lpips.LPIPSDistance`)."""
  axes = tuple(range(1, images.ndim))
  if cfg.loss == "bce":
    recon = jnp.sum(optax.sigmoid_binary_cross_entropy(logits, images), axis=axes)
  elif cfg.loss == "mse":
    recon = jnp.sum((jax.nn.sigmoid(logits) - images) ** 2, axis=axes)
  else:
    recon = jnp.sum(2.0 * jnp.abs(jax.nn.sigmoid(logits) - images), axis=axes)
  if perceptual is not None:
    pixels = np.prod(images.shape[1:])
    recon = recon + cfg.perceptual_weight * pixels * perceptual(images, jax.nn.sigmoid(logits))
  return recon


def loss_fn(model, cfg, params, images: jax.Array, key: jax.Array, perceptual=None):
  """The autoencoder's loss without the adversarial term, and (metrics, reconstructions).

  Args:
    model: the autoencoder.
    cfg: config.stage1.
    params: its parameters.
    images: (B, H, W, C) float32 in [0, 1].
    key: the step's key (the KL term's reparameterised sample).
    perceptual: the LPIPS distance (`lpips.LPIPSDistance`) with `perceptual_weight` > 0.

  Returns:
    (mean of reconstruction + reg_weight · regulariser, ({'loss', 'recon', 'reg',
    'pixel_mae'}, the reconstructions ŷ (B, H, W, C) in [0, 1])).
  """
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
  recon = reconstruction(cfg, logits, images, perceptual)
  loss = jnp.mean(recon + cfg.reg_weight * reg)
  reconstructions = jax.nn.sigmoid(logits)
  mae = jnp.mean(jnp.abs(reconstructions - images))
  metrics = {"loss": loss, "recon": jnp.mean(recon), "reg": jnp.mean(reg), "pixel_mae": mae}
  return loss, (metrics, reconstructions)


def hinge_loss(model, params, real: jax.Array, fake: jax.Array) -> jax.Array:
  """The discriminator's hinge loss on real and reconstructed images."""
  d_real = model.apply({"params": params}, real, method="discriminate")
  d_fake = model.apply({"params": params}, fake, method="discriminate")
  return 0.5 * (jnp.mean(jax.nn.relu(1.0 - d_real)) + jnp.mean(jax.nn.relu(1.0 + d_fake)))


def adaptive_weight(cfg, nll_grads, adv_grads) -> jax.Array:
  """Latent diffusion's weight of the adversarial term: disc_weight · ‖∇_L nll‖ /
  (‖∇_L adv‖ + 1e-4), clipped to [0, 10⁴], for the gradients (trees of the autoencoder's
  parameters) of the reconstruction loss and of the adversarial loss, L the decoder's
  last layer (`resnet.last_layer`)."""
  last = resnet.last_layer
  ratio = jnp.linalg.norm(last(nll_grads)) / (jnp.linalg.norm(last(adv_grads)) + 1e-4)
  return cfg.disc_weight * jnp.clip(jax.lax.stop_gradient(ratio), 0.0, 1e4)


def gradients(model, cfg, params, images, key, step, perceptual=None):
  """(gradients of every parameter, metrics) of one stage-1 step.

  Without a discriminator, the gradients of `loss_fn`. With one (params['disc']), the
  autoencoder's are those of loss_fn + λ·adv, adv = −mean D(ŷ) and λ the `adaptive_weight`
  (both from one forward pass: the two losses' gradients are two pullbacks of it); the
  discriminator's those of the hinge loss on y and the (fixed) ŷ. Before `disc_start` the
  adversarial term and the discriminator's gradients are zero.
  """
  if "disc" not in params:
    grad_fn = jax.value_and_grad(functools.partial(loss_fn, model, cfg), has_aux=True)
    (_, (metrics, _)), grads = grad_fn(params, images, key, perceptual)
    return grads, metrics
  disc = params["disc"]
  autoencoder = {k: v for k, v in params.items() if k != "disc"}

  def losses(ae):
    loss, (metrics, fake) = loss_fn(model, cfg, {**ae, "disc": disc}, images, key, perceptual)
    adv = -jnp.mean(model.apply({"params": {**ae, "disc": disc}}, fake, method="discriminate"))
    return (loss, adv), (metrics, fake)

  (_, adv), pullback, (metrics, fake) = jax.vjp(losses, autoencoder, has_aux=True)
  one, zero = jnp.ones((), jnp.float32), jnp.zeros((), jnp.float32)
  (nll_grads,) = pullback((one, zero))
  (adv_grads,) = pullback((zero, one))
  on = (step >= cfg.disc_start).astype(jnp.float32)
  weight = adaptive_weight(cfg, nll_grads, adv_grads)
  grads = jax.tree.map(lambda g, a: g + on * weight * a, nll_grads, adv_grads)
  real, fake = images, jax.lax.stop_gradient(fake)
  hinge, disc_grads = jax.value_and_grad(
    lambda d: hinge_loss(model, {**autoencoder, "disc": d}, real, fake)
  )(disc)
  grads["disc"] = jax.tree.map(lambda g: on * g, disc_grads)
  metrics = {**metrics, "adv_loss": adv, "disc_loss": hinge, "disc_factor": on}
  metrics["adaptive_weight"] = weight
  return grads, metrics


def make_train_step(model, tx, cfg, mesh, shardings, base_key, perceptual=None):
  """A jitted, sharded (state, images) → (state, metrics); the state is donated.

  `images` are the batch as it crosses to the devices: uint8 (made float there) or float32
  in [0, 1]. `perceptual` (an `lpips.LPIPSDistance`) is an argument of the jitted step,
  replicated, not a constant folded into it.
  """

  def train_step(state: loop.TrainState, images: jax.Array, perceptual):
    key = jax.random.fold_in(base_key, state.step)
    images = to_float_jax(images)
    grads, metrics = gradients(model, cfg, state.params, images, key, state.step, perceptual)
    params, opt_state = loop.apply_gradients(tx, grads, state.opt_state, state.params)
    finite = loop.all_finite(metrics["loss"], grads)
    cond = loop.conditional_update(cfg.arch == "resnet")
    return loop.guarded_update(state, finite, params, opt_state, conditional=cond), metrics

  rep = parallel.replicated(mesh)
  step = jax.jit(
    train_step,
    in_shardings=(shardings, parallel.data_sharding(mesh), rep),
    out_shardings=(shardings, rep),
    donate_argnums=0,
  )
  if perceptual is not None:
    perceptual = jax.device_put(perceptual, rep)
  return BoundStep(step, perceptual)


@dataclasses.dataclass(frozen=True)
class BoundStep:
  """A jitted (state, images, perceptual) step with its perceptual distance bound:
  called, and lowered (for cost analysis), as (state, images)."""

  step: Callable
  perceptual: Any

  def __call__(self, state, images):
    return self.step(state, images, self.perceptual)

  def lower(self, state, images):
    return self.step.lower(state, images, self.perceptual)


def load_perceptual(cfg: ml_collections.ConfigDict, compute_dtype: str = "float32"):
  """The LPIPS distance of `cfg.lpips_weights` when `perceptual_weight` > 0, else None."""
  if cfg.perceptual_weight <= 0:
    return None
  return lpips.load_lpips(cfg.lpips_weights, dtype=jnp.dtype(compute_dtype))


def train(config: ml_collections.ConfigDict, images: np.ndarray, mesh, workdir) -> tuple:
  """Trains (or resumes, or skips if finished) stage 1 on `images` (N, H, W, C).

  Returns:
    (model, params, history).
  """
  cfg = config.stage1
  model = make_model(cfg, images.shape[1:], config.compute_dtype)
  root = jax.random.key(config.seed)
  init_key, base_key = jax.random.split(jax.random.fold_in(root, 1))
  init = functools.partial(init_state, model, init_key, cfg, images.shape[1:])
  state, shardings = parallel.create_sharded(init, mesh)
  tx = make_optimizer(cfg, state.params)
  perceptual = load_perceptual(cfg, config.compute_dtype)
  step_fn = make_train_step(model, tx, cfg, mesh, shardings, base_key, perceptual)
  # This process loads only the rows of each global batch that its own devices hold.
  rows = parallel.process_rows(parallel.data_sharding(mesh), cfg.batch_size)
  data_seed = int(jax.random.randint(jax.random.fold_in(root, 2), (), 0, 2**31 - 1))

  def batch_fn(step: int):
    idx = pipeline.batch_indices(len(images), cfg.batch_size, data_seed, step)[rows]
    return parallel.global_batch(mesh, read_batch(images, idx), cfg.batch_size)

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


def read_batch(images, rows: np.ndarray) -> np.ndarray:
  """This process's rows of a step's batch, as stored (uint8 stays uint8 to the device)."""
  return np.asarray(images[rows])
