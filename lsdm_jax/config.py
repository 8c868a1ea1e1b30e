"""The configuration schema: every field, its default and what it means; the generic checks.

Experiment configs in `experiments/configs/` start from `base_config()` and change
fields. The baselines' settings are sections of the same config (`latent_diffusion`,
`consistency`, `pixel_wgcs`, `cvae`, `superres_regressor`); no stage reads them, so they
change neither a stage's results nor its fingerprint.

`validate` makes the checks that need no knowledge of the method: every field has its
default's type, and numbers lie in their ranges (`RANGES`, and by field name in the
baselines' sections). Which names a choice field accepts, and the rules that tie fields
together, are checked by the component that reads them (`check_config` beside its code;
`lsdm_jax.train.check_config` runs them all). Unknown fields are already refused by the
locked ConfigDict. Every check raises `ConfigError` naming the field and the fix.
"""

from __future__ import annotations

import json

import ml_collections

from lsdm_jax.errors import ConfigError

# Stage fields that change how a run is carried out, not what it computes: a rerun may
# change them (e.g. turn on skip_nonfinite after a NaN) and still resume.
OPERATIONAL_FIELDS = ("log_every", "save_every", "keep", "skip_nonfinite")
BASELINES = ("latent_diffusion", "consistency", "pixel_wgcs", "cvae", "superres_regressor")


def _optimizer(
  d: ml_collections.ConfigDict,
  learning_rate: float,
  schedule: str,
  *,
  warmup: int = 0,
  final: float = 0.0,
  grad_clip: float = 10.0,
  b1: float = 0.9,
  b2: float = 0.999,
  weight_decay: float = 0.0,
) -> None:
  """The optimiser fields of a trained section (`loop.make_optimizer` reads them)."""
  d.learning_rate = learning_rate  # Peak Adam learning rate ('linear' scaling: resolved).
  d.lr_scaling = "none"  # 'none', or 'linear': learning_rate = base_learning_rate × batch_size.
  d.base_learning_rate = 0.0  # lr_scaling='linear': the rate per example of the global batch.
  d.schedule = schedule  # 'constant' (after warm-up), 'cosine' or 'linear' decay to the end.
  d.warmup_steps = warmup  # Linear warm-up steps from 0 (at most steps − 1).
  d.final_lr_scale = final  # 'cosine', 'linear': the last step's rate as a share of the peak.
  d.grad_clip = grad_clip  # Global gradient-norm clip (0 = none).
  d.b1 = b1  # Adam β1.
  d.b2 = b2  # Adam β2.
  d.weight_decay = weight_decay  # Decoupled weight decay (AdamW; 0 = plain Adam).


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
  c.data.n_validation = 0  # Train rows held out of training, to choose settings on (0 = none).

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
  c.stage1.perceptual_weight = 0.0  # Weight of LPIPS (VGG) added to each pixel's term (0 = off).
  c.stage1.lpips_weights = ""  # perceptual_weight > 0: the exported LPIPS .npz (metrics.lpips).
  c.stage1.loss = "bce"  # Reconstruction, summed over pixels: 'bce', 'mse' or 'l1'.
  c.stage1.regularizer = "kl"  # Latent regulariser: 'none', 'l2' or 'kl' (VAE-style).
  c.stage1.reg_weight = 0.5  # Weight of the regulariser (β for 'kl').
  c.stage1.steps = 3000  # Optimiser steps.
  c.stage1.batch_size = 128  # Global batch size (divisible by the data axis).
  _optimizer(c.stage1, 2e-3, "cosine", warmup=100, final=0.05, weight_decay=1e-4)
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
  # The generator's optimiser; the critic's is the same with critic_learning_rate.
  _optimizer(c.stage2, 1e-4, "constant", b1=0.5, b2=0.9)
  c.stage2.critic_hidden = (256, 256)  # Critic MLP widths ('critic', 'mlp').
  c.stage2.critic_activation = "gelu"  # 'gelu' or 'leaky_relu' (slope 0.2) ('critic').
  c.stage2.critic_learning_rate = 1e-4  # Critic Adam learning rate ('critic').
  c.stage2.n_critic = 5  # Critic updates per generator update ('critic').
  c.stage2.gp_weight = 10.0  # Gradient-penalty weight ('critic').
  c.stage2.gp_stride = 2  # Penalty on every k-th example of a batch (1 = all) ('critic').
  c.stage2.epsilon = 5.0  # Sinkhorn ε, absolute, in Euclidean-cost units ('sinkhorn', ot_weight).
  c.stage2.cond_scale = 30.0  # Weight of φ(x) against z in the joint ground cost.
  c.stage2.sinkhorn_iterations = 500  # Max Sinkhorn iterations ('sinkhorn', ot_weight).
  c.stage2.ema_decay = 0.999  # EMA of the generator's weights to sample with (0 = off).
  c.stage2.real_noise = 0.2  # Std of Gaussian jitter on real latents (standardised units).
  c.stage2.unpaired_weight = 0.0  # Weight of marginal matching to unpaired latents (0 = paper).
  c.stage2.ot_weight = 0.0  # 'critic': weight of a Sinkhorn term (epsilon, cond_scale) in G's loss.
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
  c.eval.inception_weights = ""  # pytorch-fid Inception .npz: adds the FID protocol's metrics.
  c.eval.num_samples = 0  # FID protocol: samples scored (0 = as many as the task's metrics use).
  c.eval.inception_batch_size = 50  # FID protocol: images per Inception call (one compiled shape).
  c.eval.cas_steps = 300  # classcond: training steps of CAS's classifier (0 = no CAS).
  c.eval.seed = 1  # Seed of evaluation samples (kept apart from training's).
  c.eval.reference = "test"  # Images metrics.json scores against: 'test', or 'validation'.
  c.eval.enabled = True  # Compute metrics.json after training.

  d = c.latent_diffusion = ml_collections.ConfigDict()  # `baselines.latent_diffusion`.
  d.steps = 1000  # Optimiser steps.
  d.batch_size = 256  # Examples per step, drawn with replacement from the pairs.
  _optimizer(d, 1e-3, "cosine", warmup=100, final=0.1, grad_clip=1.0)
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
  _optimizer(d, 1e-4, "constant", warmup=100, grad_clip=1.0)
  d.grid_steps = 40  # Teacher DDIM steps spanning the log-SNR range.
  d.target_decay = 0.95  # EMA of the student that gives the targets, in [0, 1).
  d.ema_decay = 0.999  # EMA of the student to sample with, in [0, 1).
  d.restart_logsnr = 2.0  # Log-SNR the multistep sampler re-noises to, inside (-15, 15).
  d.steps_per_call = 100  # Optimiser steps fused in one jitted call (lax.scan).

  d = c.pixel_wgcs = ml_collections.ConfigDict()  # `baselines.pixel_wgcs` (WGAN-GP on pixels).
  d.steps = 5000  # Generator updates (each after n_critic critic updates).
  d.batch_size = 256  # Examples per update, drawn with replacement from the pairs.
  _optimizer(d, 1e-4, "constant", b1=0.5, b2=0.9)  # The generator's; the critic's below.
  d.critic_learning_rate = 1e-4  # Critic Adam learning rate (same schedule).
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
  _optimizer(d, 1e-3, "constant")
  d.latent_dim = 16  # Size of z.
  d.beta = 1.0  # Weight of the KL term (1 = the ELBO).
  d.embed_features = 32  # Width of the label embedding (encoder and decoder).
  d.encoder_widths = (1024, 512)  # Encoder MLP widths.
  d.decoder_widths = (512, 1024)  # Decoder MLP widths.
  d.steps_per_call = 100  # Optimiser steps fused in one jitted call (lax.scan).

  d = c.superres_regressor = ml_collections.ConfigDict()  # `baselines.superres.Regressor`.
  d.steps = 2000  # Adam steps (cosine decay to 0).
  d.batch_size = 64  # Pairs per step, drawn with replacement.
  _optimizer(d, 1e-3, "cosine", final=0.0, grad_clip=0.0)
  d.features = (32, 32, 32)  # Channels of the hidden 3x3 conv layers.
  d.steps_per_call = 500  # Steps between progress lines.
  return c


# --------------------------------------------------------------------------- checks

# Range rules: a predicate and the message after "<field>=<value>".
_RULES = {
  "positive": (lambda v: v > 0, "must be a positive number"),
  "nonnegative": (lambda v: v >= 0, "must be >= 0"),
  "unit": (lambda v: 0 <= v < 1, "must be in [0, 1)"),
  "closed_unit": (lambda v: 0 <= v <= 1, "must be in [0, 1]"),
  "open_unit": (lambda v: 0 < v < 1, "must be in (0, 1)"),
  "above_zero": (lambda v: v > 0, "must be > 0"),
  "count": (lambda v: v >= 1, "must be a positive integer"),
  "widths": (lambda v: bool(v) and all(w >= 1 for w in v), "must be one or more positive widths"),
  "channels": (lambda v: bool(v) and all(w >= 1 for w in v), "must be positive channel counts"),
  "seed": (lambda v: v >= -1, "must be >= 0, or -1 for the run's seed"),
}
# The range of each field of the run's sections (the baselines' sections: by field name).
RANGES = {
  "positive": (
    "stage1.latent_dim stage1.steps stage1.batch_size stage1.learning_rate stage1.hidden "
    "stage1.ch stage1.num_res_blocks stage1.z_channels stage1.disc_features "
    "stage1.disc_layers stage2.noise_dim stage2.steps stage2.batch_size stage2.learning_rate "
    "stage2.n_critic stage2.epsilon stage2.cond_scale stage2.critic_learning_rate "
    "stage2.sinkhorn_iterations stage2.cond_features stage2.gp_stride stage2.channels "
    "stage2.num_blocks eval.num_inputs eval.num_per_class eval.grid_per_class "
    "eval.inception_batch_size"
  ),
  "nonnegative": (
    "stage1.reg_weight stage2.gp_weight stage2.unpaired_weight stage2.consistency_weight "
    "stage2.real_noise stage2.ot_weight stage1.disc_weight stage1.disc_start stage1.warmup_steps "
    "stage2.warmup_steps stage1.grad_clip stage2.grad_clip stage1.weight_decay "
    "stage2.weight_decay data.image_size data.n_validation stage1.perceptual_weight "
    "stage1.base_learning_rate stage2.base_learning_rate eval.num_samples eval.cas_steps"
  ),
  "seed": "stage2.seed",
  "unit": "stage2.ema_decay stage1.b1 stage1.b2 stage2.b1 stage2.b2",
  "closed_unit": "stage1.final_lr_scale stage2.final_lr_scale task.projection semi.threshold",
  "open_unit": "semi.alpha",
  "above_zero": "semi.pseudo_weight",
  "count": "semi.neighbours semi.iterations",
  "channels": "stage1.features",
  "widths": (
    "stage1.decoder_widths stage2.hidden stage2.critic_hidden stage1.ch_mult stage2.critic_channels"
  ),
}
# In a baseline's section, the range of a field by its name.
_SECTION_RANGES = {
  "positive": (
    "steps batch_size learning_rate critic_learning_rate steps_per_call width depth "
    "cond_features time_features grid_steps n_critic noise_dim embed_features latent_dim"
  ),
  "nonnegative": "warmup_steps gp_weight beta grad_clip weight_decay base_learning_rate",
  "unit": "ema_decay target_decay b1 b2",
  "closed_unit": "final_lr_scale",
}


def _check_range(rule: str, field: str, value) -> None:
  ok, message = _RULES[rule]
  if isinstance(value, tuple):
    if not ok(value):
      raise ConfigError(f"{field}={value!r} {message}")
  elif isinstance(value, bool) or not isinstance(value, (int, float)) or not ok(value):
    raise ConfigError(f"{field}={value!r} {message}")


def check_choice(value, allowed: tuple, field: str) -> None:
  """Raises ConfigError if `value` is not one of `allowed` (config field `field`)."""
  if value not in allowed:
    raise ConfigError(f"{field}={value!r} is not one of {allowed}")


def check_section(name: str, section: ml_collections.ConfigDict) -> None:
  """Raises ConfigError naming the field if baseline section `name` has a bad type or value."""
  if not isinstance(section, ml_collections.ConfigDict):
    raise ConfigError(f"{name}: pass the config section, e.g. base_config().{name}")
  _check_types(section, base_config()[name], name)
  rules = {f: rule for rule, fields in _SECTION_RANGES.items() for f in fields.split()}
  for field, value in section.items():
    if field in rules:
      _check_range(rules[field], f"{name}.{field}", value)
    elif isinstance(value, tuple):
      _check_range("widths", f"{name}.{field}", value)


def _check_types(value, default, field: str) -> None:
  """Every field has its default's type (tuples: element by element)."""
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


LR_SCALINGS = ("none", "linear")


def resolve(c: ml_collections.ConfigDict) -> None:
  """Sets the fields that derive from others, in place: with `lr_scaling='linear'` a
  section's `learning_rate` becomes `base_learning_rate × batch_size` (the global batch),
  so that a run with another batch size learns at its own rate, and config.json holds the
  rate used. An explicit learning_rate must then be 0 (unset) or that value.

  Raises:
    ConfigError: a bad `lr_scaling`, or a learning rate set beside a linear scaling rule.
  """
  for name in ("stage1", "stage2", *BASELINES):
    d = c[name]
    check_choice(d.lr_scaling, LR_SCALINGS, f"{name}.lr_scaling")
    if d.lr_scaling == "none":
      continue
    if "critic_learning_rate" in d:
      raise ConfigError(
        f"{name}.lr_scaling='linear' scales one rate, and {name} has two (learning_rate and "
        "critic_learning_rate): set lr_scaling='none' and both rates"
      )
    if not d.base_learning_rate > 0:
      raise ConfigError(
        f"{name}.base_learning_rate={d.base_learning_rate!r} must be a positive number with "
        f"{name}.lr_scaling='linear'"
      )
    rate = d.base_learning_rate * d.batch_size
    if d.learning_rate not in (0.0, rate):
      raise ConfigError(
        f"{name}.learning_rate={d.learning_rate!r} is resolved from {name}.base_learning_rate × "
        f"{name}.batch_size with {name}.lr_scaling='linear': leave it 0, or set "
        f"lr_scaling='none' to set it yourself"
      )
    d.learning_rate = rate


def validate(c: ml_collections.ConfigDict) -> None:
  """The generic checks: types of every field, then (after `resolve` has set the derived
  fields) ranges of every number (`RANGES`) and of the baselines' sections. Raises
  ConfigError naming the first bad field."""
  _check_types(c, base_config(), "")
  resolve(c)
  for rule, fields in RANGES.items():
    for field in fields.split():
      section, name = field.split(".")
      _check_range(rule, field, c[section][name])
  for name in BASELINES:
    check_section(name, c[name])


def to_json(c: ml_collections.ConfigDict) -> str:
  return json.dumps(c.to_dict(), indent=2, sort_keys=True, default=list)


def fingerprint(section: ml_collections.ConfigDict | dict) -> str:
  """A stable string of a config section, stored beside checkpoints."""
  d = section.to_dict() if hasattr(section, "to_dict") else section
  return json.dumps(d, sort_keys=True, default=list)


def result_fields(section: ml_collections.ConfigDict | dict) -> dict:
  """A stage's section without `OPERATIONAL_FIELDS`: the fields that decide its result."""
  d = section.to_dict() if hasattr(section, "to_dict") else section
  return {k: v for k, v in d.items() if k not in OPERATIONAL_FIELDS}
