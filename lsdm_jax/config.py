"""The configuration schema: every field, its default and what it means.

Experiment configs in `experiments/configs/` start from `base_config()` and change
fields. The baselines' settings are sections of the same config (`latent_diffusion`,
`consistency`, `pixel_wgcs`, `cvae`, `superres_regressor`); no stage reads them, so they
change neither a stage's results nor its fingerprint. `validate` checks values and
combinations and raises `ConfigError` with the field's name and the fix; unknown fields are
already refused by the locked ConfigDict.
"""

from __future__ import annotations

import json

import ml_collections

ESTIMATORS = ("critic", "sinkhorn")
REGULARIZERS = ("none", "l2", "kl")
RECON_LOSSES = ("bce", "mse", "l1")
CRITIC_ACTIVATIONS = ("gelu", "leaky_relu")
DECODERS = ("mlp", "conv")
STAGE1_ARCHS = ("conv", "resnet")
STAGE2_ARCHS = ("mlp", "conv")
COMPUTE_DTYPES = ("float32", "bfloat16")
TASKS = ("classcond", "attributes", "superres")
PREDICTIONS = ("v", "eps")
LOGSNR_RANGE = (-15.0, 15.0)  # The latent diffusion schedule's log-SNR at t = 1 and t = 0.


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0  # Master seed: model init, data order and noise all derive from it.
  # Activations of the 'resnet' autoencoder and the 'conv' stage-2 networks: 'float32' or
  # 'bfloat16' (GPU/TPU); parameters, optimiser state and losses stay float32.
  c.compute_dtype = "float32"

  c.data = ml_collections.ConfigDict()
  c.data.source = "mnist5k"  # 'mnist5k' (embedded), 'tfds:<name>' or 'npz:<path>'.
  c.data.data_dir = ""  # TFDS data directory ('' = TFDS default / $TFDS_DATA_DIR).
  c.data.image_size = 0  # TFDS only: centre-crop and resize to this size (0 = native).
  c.data.streaming = False  # TFDS only: decode images on access; stage-1 batches via grain.
  c.data.workers = 0  # streaming: grain processes decoding stage-1 batches (0 = this one).
  c.data.prefetch = 2  # streaming: stage-1 batches decoded ahead, one thread each (0 = none).
  c.data.attributes = ()  # TFDS: binary attributes to load, e.g. ('Male', 'Smiling'); () = none.
  c.data.n_paired = 500  # Paired (x, y) examples drawn from the train split.
  c.data.n_unpaired = 3500  # Unpaired images (labels dropped) drawn from the rest.
  c.data.split_seed = 0  # Seed of the paired/unpaired split (class-stratified).

  c.task = ml_collections.ConfigDict()
  c.task.name = "classcond"  # 'classcond' (label), 'attributes' (data.attributes) or 'superres'.
  c.task.factor = 4  # superres: downsampling factor, 2 or 4.
  c.task.projection = 0.0  # superres: move output blocks this share towards pooling to x.

  c.mesh = ml_collections.ConfigDict()
  c.mesh.data = -1  # Data-parallel axis size (-1 = all devices / mesh.model).
  c.mesh.model = 1  # Model-parallel axis size (splits large kernels).
  c.multihost = False  # Connect processes first (JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES...).

  c.stage1 = ml_collections.ConfigDict()
  c.stage1.latent_dim = 16  # Size of z ('conv'; 'resnet': h·w·z_channels).
  c.stage1.features = (16, 32)  # Channels of the stride-2 conv stages (one halving each).
  c.stage1.hidden = 256  # Width of the dense layers around z (encoder; conv decoder).
  c.stage1.decoder = "mlp"  # 'mlp' (fast generation) or 'conv' (sub-pixel convolutions).
  c.stage1.decoder_widths = (512, 1024)  # Hidden widths of the 'mlp' decoder.
  c.stage1.arch = "conv"  # 'conv' (flat z: the fields above) or 'resnet' (spatial z: below).
  c.stage1.ch = 128  # resnet: base channels.
  c.stage1.ch_mult = (1, 2, 4)  # resnet: channel multiplier per level (len − 1 halvings).
  c.stage1.num_res_blocks = 2  # resnet: residual blocks per level (decoder: one more).
  c.stage1.z_channels = 4  # resnet: channels of the spatial latent.
  c.stage1.attention = True  # resnet: self-attention at the lowest resolution.
  c.stage1.disc_weight = 0.0  # resnet: weight of the PatchGAN (hinge) loss (0 = off).
  c.stage1.disc_start = 0  # resnet: step from which the discriminator trains and counts.
  c.stage1.disc_features = 64  # resnet: channels of the discriminator's first layer.
  c.stage1.disc_layers = 3  # resnet: stride-2 layers of the discriminator after the first.
  c.stage1.loss = "bce"  # Reconstruction, summed over pixels: 'bce', 'mse' or 'l1'.
  c.stage1.regularizer = "kl"  # Latent regulariser: 'none', 'l2' or 'kl' (VAE-style).
  c.stage1.reg_weight = 0.5  # Weight of the regulariser (β for 'kl').
  c.stage1.steps = 3000  # Optimiser steps.
  c.stage1.batch_size = 128  # Global batch size (divisible by the data axis).
  c.stage1.learning_rate = 2e-3  # Peak learning rate (warm-up then cosine decay).
  c.stage1.warmup_steps = 100  # Linear warm-up steps.
  c.stage1.b1 = 0.9  # Adam β1.
  c.stage1.b2 = 0.999  # Adam β2.
  c.stage1.log_every = 100  # Steps between progress lines.
  c.stage1.save_every = 1000  # Steps between checkpoints.
  c.stage1.keep = 2  # Checkpoints kept.
  c.stage1.skip_nonfinite = False  # Skip non-finite steps instead of stopping.

  c.stage2 = ml_collections.ConfigDict()
  c.stage2.seed = -1  # Seed of stage 2 alone (init, batches, noise); -1 = the run's seed.
  c.stage2.estimator = "critic"  # W1 estimator: 'critic' (dual + GP) or 'sinkhorn' (OTT).
  c.stage2.noise_dim = 16  # Size of η.
  c.stage2.arch = "mlp"  # 'mlp' (flat z) or 'conv' (spatial z of stage1.arch='resnet').
  c.stage2.hidden = (256, 256, 256)  # Generator MLP widths ('mlp').
  c.stage2.channels = 128  # Generator feature-map channels ('conv').
  c.stage2.num_blocks = 4  # Generator FiLM residual blocks ('conv').
  c.stage2.critic_channels = (64, 128, 256)  # Critic conv stages; all but the first halve ('conv').
  c.stage2.cond_features = 128  # Width of the condition embedding.
  c.stage2.steps = 6000  # Generator updates.
  c.stage2.batch_size = 256  # Global batch of paired latents per update.
  c.stage2.learning_rate = 1e-4  # Generator Adam learning rate.
  c.stage2.b1 = 0.5  # Adam β1 (generator and critic).
  c.stage2.b2 = 0.9  # Adam β2 (generator and critic).
  c.stage2.critic_hidden = (256, 256)  # Critic MLP widths ('critic', 'mlp').
  c.stage2.critic_activation = "gelu"  # 'gelu' or 'leaky_relu' (slope 0.2) ('critic').
  c.stage2.critic_learning_rate = 1e-4  # Critic Adam learning rate ('critic').
  c.stage2.n_critic = 5  # Critic updates per generator update ('critic').
  c.stage2.gp_weight = 10.0  # Gradient-penalty weight ('critic').
  c.stage2.gp_stride = 2  # Penalty on every k-th example of a batch (1 = all) ('critic').
  c.stage2.epsilon = 5.0  # Sinkhorn ε, absolute, in units of the Euclidean cost ('sinkhorn').
  c.stage2.cond_scale = 30.0  # Weight of φ(x) against z in the joint ground cost.
  c.stage2.sinkhorn_iterations = 500  # Max Sinkhorn iterations ('sinkhorn').
  c.stage2.ema_decay = 0.999  # EMA of the generator's weights to sample with (0 = off).
  c.stage2.real_noise = 0.2  # Std of Gaussian jitter on real latents (standardised units).
  c.stage2.unpaired_weight = 0.0  # Weight of marginal matching to unpaired latents (0 = paper).
  c.stage2.consistency_weight = 0.0  # superres: weight of ‖pool(D(G)) − x‖² in G's loss.
  c.stage2.log_every = 200  # Generator updates between progress lines.
  c.stage2.save_every = 1000  # Generator updates between checkpoints.
  c.stage2.keep = 2  # Checkpoints kept.
  c.stage2.steps_per_call = 20  # Generator updates fused in one jitted call (lax.scan).
  c.stage2.skip_nonfinite = False  # Skip non-finite steps instead of stopping.

  c.semi = ml_collections.ConfigDict()  # Semi-supervised stage 2 (`lsdm_jax.semi`; not the paper).
  c.semi.enabled = False  # Give unpaired latents conditions and train G on them too.
  c.semi.labeller = "label_spreading"  # classcond: 'label_spreading' or 'knn' (paired only).
  c.semi.neighbours = 5  # classcond: neighbours per latent in the labeller's graph / vote.
  c.semi.alpha = 0.9  # classcond: label spreading's weight of neighbours against own label.
  c.semi.iterations = 100  # classcond: label spreading iterations.
  c.semi.threshold = 0.5  # classcond: least top probability of a pseudo pair.
  c.semi.weighting = "hard"  # classcond: 'hard' (weight 1) or 'soft' (weight = confidence).
  c.semi.pseudo_weight = 1.0  # Weight of one pseudo pair against one true pair.
  c.semi.balance = True  # classcond: pseudo pairs per class weigh as the paired shares.

  c.eval = ml_collections.ConfigDict()
  c.eval.num_per_class = 100  # classcond: samples per class for metrics.
  c.eval.grid_per_class = 10  # classcond: columns of the sample grid (rows = classes).
  c.eval.num_inputs = 1000  # superres, attributes: test inputs evaluated (<= test split size).
  c.eval.inception_weights = ""  # pytorch-fid Inception .npz: adds FID, P/R in its features.
  c.eval.seed = 1  # Seed of evaluation samples (kept apart from training's).
  c.eval.enabled = True  # Compute metrics.json after training.

  d = c.latent_diffusion = ml_collections.ConfigDict()  # `baselines.latent_diffusion`.
  d.steps = 1000  # Optimiser steps.
  d.batch_size = 256  # Examples per step, drawn with replacement from the pairs.
  d.learning_rate = 1e-3  # Peak Adam learning rate (linear warm-up, cosine decay to 1/10).
  d.warmup_steps = 100  # Linear warm-up steps (at most half the run).
  d.grad_clip = 1.0  # Global gradient-norm clip.
  d.ema_decay = 0.999  # EMA of the weights to sample with, in [0, 1).
  d.width = 256  # Hidden width of the residual MLP.
  d.depth = 3  # Residual blocks.
  d.cond_features = 128  # Width of the condition embedding.
  d.time_features = 64  # Size of the sinusoidal time embedding.
  d.prediction = "v"  # Network target: 'v' or 'eps'.
  d.steps_per_call = 100  # Optimiser steps fused in one jitted call (lax.scan).

  d = c.consistency = ml_collections.ConfigDict()  # `baselines.consistency` (distillation).
  d.steps = 2000  # Optimiser steps.
  d.batch_size = 256  # Examples per step, drawn with replacement from the pairs.
  d.learning_rate = 1e-4  # Adam learning rate (constant after a linear warm-up).
  d.warmup_steps = 100  # Linear warm-up steps (at most half the run).
  d.grad_clip = 1.0  # Global gradient-norm clip.
  d.grid_steps = 40  # Teacher DDIM steps spanning the log-SNR range.
  d.target_decay = 0.95  # EMA of the student that gives the targets, in [0, 1).
  d.ema_decay = 0.999  # EMA of the student to sample with, in [0, 1).
  d.restart_logsnr = 2.0  # Log-SNR the multistep sampler re-noises to, inside (-15, 15).
  d.steps_per_call = 100  # Optimiser steps fused in one jitted call (lax.scan).

  d = c.pixel_wgcs = ml_collections.ConfigDict()  # `baselines.pixel_wgcs` (WGAN-GP on pixels).
  d.steps = 5000  # Generator updates (each after n_critic critic updates).
  d.batch_size = 256  # Examples per update, drawn with replacement from the pairs.
  d.learning_rate = 1e-4  # Generator Adam learning rate.
  d.critic_learning_rate = 1e-4  # Critic Adam learning rate.
  d.b1 = 0.5  # Adam β1 (both networks).
  d.b2 = 0.9  # Adam β2 (both networks).
  d.grad_clip = 10.0  # Global gradient-norm clip (both networks).
  d.n_critic = 5  # Critic updates per generator update.
  d.gp_weight = 10.0  # Gradient-penalty weight.
  d.noise_dim = 32  # Size of η.
  d.embed_features = 32  # Width of the label embeddings (generator and critic).
  d.widths = (256, 512, 1024)  # Generator MLP widths, before the pixel layer.
  d.critic_widths = (512, 256)  # Critic MLP widths.
  d.steps_per_call = 50  # Generator updates fused in one jitted call (lax.scan).

  d = c.cvae = ml_collections.ConfigDict()  # `baselines.cvae` (conditional VAE, pairs only).
  d.steps = 3000  # Optimiser steps.
  d.batch_size = 256  # Examples per step, drawn with replacement from the pairs.
  d.learning_rate = 1e-3  # Adam learning rate (constant).
  d.grad_clip = 10.0  # Global gradient-norm clip.
  d.latent_dim = 16  # Size of z.
  d.beta = 1.0  # Weight of the KL term (1 = the ELBO).
  d.embed_features = 32  # Width of the label embedding (encoder and decoder).
  d.encoder_widths = (1024, 512)  # Encoder MLP widths.
  d.decoder_widths = (512, 1024)  # Decoder MLP widths.
  d.steps_per_call = 100  # Optimiser steps fused in one jitted call (lax.scan).

  d = c.superres_regressor = ml_collections.ConfigDict()  # `baselines.superres.Regressor`.
  d.steps = 2000  # Adam steps (cosine decay to 0).
  d.batch_size = 64  # Pairs per step, drawn with replacement.
  d.learning_rate = 1e-3  # Initial Adam learning rate.
  d.features = (32, 32, 32)  # Channels of the hidden 3x3 conv layers.
  d.steps_per_call = 500  # Steps between progress lines.
  return c


BASELINES = ("latent_diffusion", "consistency", "pixel_wgcs", "cvae", "superres_regressor")
# Per baseline section: fields that must be positive, and fields in [0, 1).
_POSITIVE = ("steps", "batch_size", "learning_rate", "critic_learning_rate", "grad_clip")
_POSITIVE += ("steps_per_call", "width", "depth", "cond_features", "time_features")
_POSITIVE += ("grid_steps", "n_critic", "noise_dim", "embed_features", "latent_dim")
_UNIT = ("ema_decay", "target_decay", "b1", "b2")


def check_section(name: str, section: ml_collections.ConfigDict) -> None:
  """Raises ConfigError naming the field if baseline section `name` has a bad value."""
  from lsdm_jax.errors import ConfigError

  if not isinstance(section, ml_collections.ConfigDict):
    raise ConfigError(f"{name}: pass the config section, e.g. base_config().{name}")
  _check_types(section, base_config()[name], name)
  for field, value in section.items():
    where = f"{name}.{field}={value!r}"
    if field in _POSITIVE and not value > 0:
      raise ConfigError(f"{where} must be a positive number")
    if field in _UNIT and not 0 <= value < 1:
      raise ConfigError(f"{where} must be in [0, 1)")
    if field in ("warmup_steps", "gp_weight", "beta") and not value >= 0:
      raise ConfigError(f"{where} must be >= 0")
    if isinstance(value, tuple) and (not value or any(w < 1 for w in value)):
      raise ConfigError(f"{where} must be one or more positive widths")
  if name == "latent_diffusion":
    _choice(section.prediction, PREDICTIONS, "latent_diffusion.prediction")
  lo, hi = LOGSNR_RANGE
  if name == "consistency" and not lo < section.restart_logsnr < hi:
    raise ConfigError(
      f"consistency.restart_logsnr={section.restart_logsnr!r} must be in ({lo}, {hi})"
    )


def _choice(value, allowed, field):
  from lsdm_jax.errors import ConfigError

  if value not in allowed:
    raise ConfigError(f"{field}={value!r} is not one of {allowed}")


def _check_types(value, default, field: str) -> None:
  """Every field has its default's type (tuples: element by element)."""
  from lsdm_jax.errors import ConfigError

  if isinstance(default, ml_collections.ConfigDict):
    for k, d in default.items():
      if k in value:
        _check_types(value[k], d, f"{field}.{k}" if field else k)
    return
  kinds = {bool: (bool,), int: (int,), float: (int, float), str: (str,)}
  if isinstance(default, tuple):
    ok = isinstance(value, (tuple, list)) and all(
      isinstance(v, kinds.get(type(default[0]), object)) and not isinstance(v, bool)
      for v in (value if default else ())
    )
  else:
    ok = isinstance(value, kinds.get(type(default), object))
    ok = ok and (isinstance(default, bool) or not isinstance(value, bool))
  if not ok:
    raise ConfigError(f"{field}={value!r} has the wrong type: use a value like {default!r}")


def validate(c: ml_collections.ConfigDict) -> None:
  """Raises ConfigError on any impossible value, naming the field."""
  from lsdm_jax.errors import ConfigError

  _check_types(c, base_config(), "")
  _choice(c.stage2.estimator, ESTIMATORS, "stage2.estimator")
  _choice(c.stage1.regularizer, REGULARIZERS, "stage1.regularizer")
  _choice(c.stage2.critic_activation, CRITIC_ACTIVATIONS, "stage2.critic_activation")
  _choice(c.stage1.loss, RECON_LOSSES, "stage1.loss")
  _choice(c.stage1.decoder, DECODERS, "stage1.decoder")
  _choice(c.task.name, TASKS, "task.name")
  _choice(c.stage1.arch, STAGE1_ARCHS, "stage1.arch")
  _choice(c.stage2.arch, STAGE2_ARCHS, "stage2.arch")
  _choice(c.compute_dtype, COMPUTE_DTYPES, "compute_dtype")
  if c.stage2.arch == "conv" and c.stage1.arch != "resnet":
    raise ConfigError("stage2.arch='conv' needs a spatial latent: set stage1.arch='resnet'")
  if c.compute_dtype != "float32" and (c.stage1.arch, c.stage2.arch) != ("resnet", "conv"):
    raise ConfigError(
      f"compute_dtype={c.compute_dtype!r} applies to stage1.arch='resnet' with "
      "stage2.arch='conv'; the flat models compute in float32 (set compute_dtype='float32')"
    )
  if c.stage1.disc_weight > 0 and c.stage1.arch != "resnet":
    raise ConfigError("stage1.disc_weight > 0 needs stage1.arch='resnet'")
  if c.stage2.consistency_weight > 0 and c.task.name != "superres":
    raise ConfigError("stage2.consistency_weight > 0 needs task.name='superres'")
  if not 0.0 <= c.task.projection <= 1.0:
    raise ConfigError(f"task.projection={c.task.projection!r} must be in [0, 1]")
  if c.task.projection > 0 and c.task.name != "superres":
    raise ConfigError("task.projection > 0 needs task.name='superres' (x is a pooled image)")
  positive = {
    "stage1.latent_dim": c.stage1.latent_dim,
    "stage1.steps": c.stage1.steps,
    "stage1.batch_size": c.stage1.batch_size,
    "stage1.learning_rate": c.stage1.learning_rate,
    "stage2.noise_dim": c.stage2.noise_dim,
    "stage2.steps": c.stage2.steps,
    "stage2.batch_size": c.stage2.batch_size,
    "stage2.learning_rate": c.stage2.learning_rate,
    "stage2.n_critic": c.stage2.n_critic,
    "stage2.epsilon": c.stage2.epsilon,
    "stage2.cond_scale": c.stage2.cond_scale,
    "stage2.critic_learning_rate": c.stage2.critic_learning_rate,
    "stage2.sinkhorn_iterations": c.stage2.sinkhorn_iterations,
    "stage2.cond_features": c.stage2.cond_features,
    "stage2.gp_stride": c.stage2.gp_stride,
    "stage1.hidden": c.stage1.hidden,
    "eval.num_inputs": c.eval.num_inputs,
    "eval.num_per_class": c.eval.num_per_class,
    "eval.grid_per_class": c.eval.grid_per_class,
    "stage1.ch": c.stage1.ch,
    "stage1.num_res_blocks": c.stage1.num_res_blocks,
    "stage1.z_channels": c.stage1.z_channels,
    "stage1.disc_features": c.stage1.disc_features,
    "stage1.disc_layers": c.stage1.disc_layers,
    "stage2.channels": c.stage2.channels,
    "stage2.num_blocks": c.stage2.num_blocks,
  }
  for field, value in positive.items():
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
      raise ConfigError(f"{field}={value!r} must be a positive number")
  nonnegative = (
    "stage1.reg_weight",
    "stage2.gp_weight",
    "stage2.unpaired_weight",
    "stage2.consistency_weight",
    "stage2.real_noise",
    "stage1.disc_weight",
    "stage1.disc_start",
  )
  if c.stage2.seed < -1:
    raise ConfigError(f"stage2.seed={c.stage2.seed!r} must be >= 0, or -1 for the run's seed")
  if not 0 <= c.stage2.ema_decay < 1:
    raise ConfigError(f"stage2.ema_decay={c.stage2.ema_decay!r} must be in [0, 1)")
  for field in (*nonnegative, "stage1.warmup_steps", "data.image_size"):
    section, name = field.split(".")
    if not c[section][name] >= 0:
      raise ConfigError(f"{field}={c[section][name]!r} must be >= 0")
  if not c.stage1.features or any(f < 1 for f in c.stage1.features):
    raise ConfigError(f"stage1.features={c.stage1.features!r} must be positive channel counts")
  fields = ("stage1.decoder_widths", "stage2.hidden", "stage2.critic_hidden")
  for field in (*fields, "stage1.ch_mult", "stage2.critic_channels"):
    section, name = field.split(".")
    widths = c[section][name]
    if not widths or any(w < 1 for w in widths):
      raise ConfigError(f"{field}={widths!r} must be one or more positive widths")
  if c.stage2.batch_size % c.stage2.gp_stride:
    raise ConfigError(
      f"stage2.gp_stride={c.stage2.gp_stride} must divide stage2.batch_size={c.stage2.batch_size}"
    )
  from lsdm_jax import semi

  semi.check_config(c)
  for field in ("stage1.b1", "stage1.b2", "stage2.b1", "stage2.b2"):
    section, name = field.split(".")
    if not 0 <= c[section][name] < 1:
      raise ConfigError(f"{field}={c[section][name]!r} must be in [0, 1)")
  for name in BASELINES:
    check_section(name, c[name])
  from lsdm_jax.data import pipeline

  pipeline.check_config(c)


def to_json(c: ml_collections.ConfigDict) -> str:
  return json.dumps(c.to_dict(), indent=2, sort_keys=True, default=list)


def fingerprint(section: ml_collections.ConfigDict | dict) -> str:
  """A stable string of a config section, stored beside checkpoints."""
  d = section.to_dict() if hasattr(section, "to_dict") else section
  return json.dumps(d, sort_keys=True, default=list)
