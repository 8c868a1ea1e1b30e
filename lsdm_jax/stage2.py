"""Stage 2: a one-step generator G(η, x) → z matched to the paired latents in joint W1.

Training uses paired latents only (x, z = E(y)), standardised per dimension. Each
generator update samples a batch (x, z) and noise η, and moves G so that the joint
cloud (x, G(η, x)) approaches (x, z) under the chosen W1 estimator:

* `critic`: WGAN-GP. `n_critic` critic updates (a `lax.scan`) then one generator update;
  the critic's dual value E f(x, z) − E f(x, G) is the running W1 estimate.
* `sinkhorn`: the debiased Sinkhorn divergence of OTT-JAX with the Euclidean cost on
  joint points (cond_scale·φ(x), z), at an absolute ε (see `wasserstein`).

With `ema_decay` > 0 the generator's weights are also averaged over its updates
(`generator_ema`), and samples use the average (`sampling_params`): a GAN's generator
circles its target, and the average sits nearer the centre of its orbit.

Semi-supervised mode (beyond the paper, `lsdm_jax.semi`): with `semi.enabled` the unpaired
latents join the pairs with conditions (pseudo-labels, or exact pooled inputs for superres),
and batches are drawn by the pairs' weights (`data["cdf"]`).

Optional (beyond the paper): with `unpaired_weight > 0` G also matches the latent
*marginal* of the unpaired images, with conditions drawn from the paired set's prior,
by a second W1 term (a second critic on z alone, or a Sinkhorn divergence on z).

Optional (beyond the paper, superres): with `consistency_weight > 0` G's loss adds
consistency_weight · mean ‖pool(D(G(η, x))) − x‖², the known degradation applied to the
decoded sample, through the frozen stage-1 decoder.

`steps_per_call` generator updates are fused in one jitted call by a `lax.scan`;
all latents live on the device and batches are drawn there, so the host only
dispatches and logs.
"""

from __future__ import annotations

import math
import pathlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from lsdm_jax import checkpoints, loop, parallel, semi, wasserstein
from lsdm_jax import config as config_lib
from lsdm_jax.data.tasks import Task, block_mean
from lsdm_jax.errors import ConfigError
from lsdm_jax.models import spatial
from lsdm_jax.models.critic import ACTIVATIONS, Critic
from lsdm_jax.models.generator import Generator

ESTIMATORS = ("critic", "sinkhorn")
ARCHS = ("mlp", "conv")
COMPUTE_DTYPES = ("float32", "bfloat16")


def check_config(config: ml_collections.ConfigDict) -> None:
  """Checks the `stage2` section: its choices, the loop's counts, the batch against the mesh
  and the penalty's stride, and the rules that tie it to stage 1, the task and
  `compute_dtype` (the stage-2 networks are the last to read them)."""
  cfg = config.stage2
  config_lib.check_choice(cfg.estimator, ESTIMATORS, "stage2.estimator")
  config_lib.check_choice(cfg.critic_activation, tuple(ACTIVATIONS), "stage2.critic_activation")
  config_lib.check_choice(cfg.arch, ARCHS, "stage2.arch")
  config_lib.check_choice(config.compute_dtype, COMPUTE_DTYPES, "compute_dtype")
  loop.check_optimizer(cfg, "stage2")
  if cfg.arch == "conv" and config.stage1.arch != "resnet":
    raise ConfigError("stage2.arch='conv' needs a spatial latent: set stage1.arch='resnet'")
  if config.compute_dtype != "float32" and (config.stage1.arch, cfg.arch) != ("resnet", "conv"):
    raise ConfigError(
      f"compute_dtype={config.compute_dtype!r} applies to stage1.arch='resnet' with "
      "stage2.arch='conv'; the flat models compute in float32 (set compute_dtype='float32')"
    )
  if cfg.consistency_weight > 0 and config.task.name != "superres":
    raise ConfigError("stage2.consistency_weight > 0 needs task.name='superres'")
  if cfg.batch_size % cfg.gp_stride:
    raise ConfigError(
      f"stage2.gp_stride={cfg.gp_stride} must divide stage2.batch_size={cfg.batch_size}"
    )
  loop.LoopConfig.from_config("stage2", cfg).validate("stage2")
  mesh = parallel.make_mesh(config.mesh.data, config.mesh.model)
  parallel.check_batch_size(cfg.batch_size, mesh, "stage2.batch_size")


def make_generator(
  cfg: ml_collections.ConfigDict, task: Task, latent_dim: int, latent_shape=None, dtype="float32"
):
  """G for `cfg` (config.stage2): the MLP `Generator`, or the `ConvGenerator` ('conv')."""
  if cfg.arch == "conv":
    return spatial.ConvGenerator(
      tuple(_spatial(latent_shape, latent_dim)),
      task.cond_kind,
      task.num_classes,
      cfg.cond_features,
      cfg.noise_dim,
      cfg.channels,
      cfg.num_blocks,
      jnp.dtype(dtype),
    )
  return Generator(
    latent_dim,
    task.cond_kind,
    task.num_classes,
    tuple(cfg.hidden),
    cfg.cond_features,
    cfg.noise_dim,
  )


def _spatial(latent_shape, latent_dim: int) -> tuple[int, int, int]:
  if latent_shape is None or len(latent_shape) != 3 or math.prod(latent_shape) != latent_dim:
    raise ConfigError(
      f"stage2.arch='conv' needs a spatial latent of {latent_dim} values, got shape "
      f"{latent_shape}: train stage 1 with stage1.arch='resnet'"
    )
  return tuple(latent_shape)


def make_critics(
  cfg: ml_collections.ConfigDict, task: Task, latent_dim: int, latent_shape=None, dtype="float32"
) -> dict:
  """The critic(s) f(x, z) (and f(z) of the marginal with `unpaired_weight` > 0)."""
  hidden, act = tuple(cfg.critic_hidden), cfg.critic_activation
  if cfg.arch == "conv":
    shape, channels = _spatial(latent_shape, latent_dim), tuple(cfg.critic_channels)
    make = lambda kind: spatial.ConvCritic(
      shape, kind, task.num_classes, cfg.cond_features, channels, act, jnp.dtype(dtype)
    )
    critics = {"critic": make(task.cond_kind)}
    if cfg.unpaired_weight > 0:
      critics["marginal_critic"] = make("none")
    return critics
  critics = {
    "critic": Critic(
      task.cond_kind, task.num_classes, hidden, cfg.cond_features, latent_dim, activation=act
    )
  }
  if cfg.unpaired_weight > 0:
    critics["marginal_critic"] = Critic(
      "none", hidden=hidden, latent_dim=latent_dim, activation=act
    )
  return critics


def _constrain(x: jax.Array, lead: int, mesh) -> jax.Array:
  """Splits axis `lead` (the batch axis, after `lead` stacking axes) over `data`."""
  spec = jax.sharding.PartitionSpec(*([None] * lead), parallel.DATA)
  return jax.lax.with_sharding_constraint(x, jax.sharding.NamedSharding(mesh, spec))


def _sample(key, data: dict, shape: tuple[int, ...], mesh, real_noise: float = 0.0):
  """Batches (x, z) drawn with replacement from on-device arrays, split over `data`.

  `shape` is (batch,) or (stack, batch) for several batches at once. With
  `real_noise` > 0 the latents are jittered by N(0, real_noise²): the target becomes a
  kernel density estimate of the few paired latents rather than their atoms.
  """
  k_idx, k_noise = jax.random.split(key)
  if "cdf" in data:  # Weighted pairs (semi-supervised mode): row i ∝ its weight.
    idx = semi.draw_rows(k_idx, data["cdf"], shape)
  else:
    idx = jax.random.randint(k_idx, shape, 0, data["z"].shape[0])
  z = jnp.take(data["z"], idx, axis=0)
  if real_noise > 0:
    z = z + real_noise * jax.random.normal(k_noise, z.shape, z.dtype)
  lead = len(shape) - 1
  return _constrain(jnp.take(data["x"], idx, axis=0), lead, mesh), _constrain(z, lead, mesh)


def _sample_rows(key, array: jax.Array, shape: tuple[int, ...], mesh) -> jax.Array:
  idx = jax.random.randint(key, shape, 0, array.shape[0])
  return _constrain(jnp.take(array, idx, axis=0), len(shape) - 1, mesh)


def unroll_scans(cfg: ml_collections.ConfigDict) -> bool:
  """Whether the fused steps and the critic phase are unrolled instead of looped.

  XLA:CPU runs a convolution inside a loop (`lax.scan`) some 30x slower than the same
  convolution in straight-line code, so the 'conv' networks are unrolled on the CPU
  (`loop.cpu_workarounds`, which LSDM_JAX_CPU_WORKAROUNDS=0 switches off); elsewhere, and
  for the MLP networks, a loop compiles faster and runs as fast.
  """
  return cfg.arch == "conv" and loop.cpu_workarounds()


class Stage2:
  """The stage-2 models, optimisers and the fused, jitted training step.

  `decoder` (the stage-1 decoder module) is needed with `consistency_weight > 0` only;
  `latent_shape` (h, w, c) with `arch='conv'` only.
  """

  def __init__(
    self,
    config: ml_collections.ConfigDict,
    task: Task,
    latent_dim: int,
    mesh,
    decoder=None,
    latent_shape=None,
  ):
    self.cfg = cfg = config.stage2
    self.task, self.latent_dim, self.mesh = task, latent_dim, mesh
    self.decoder = decoder
    self.unroll = unroll_scans(cfg)
    nets = (cfg, task, latent_dim, latent_shape, config.compute_dtype)
    self.generator = make_generator(*nets)
    self.critics = make_critics(*nets) if cfg.estimator == "critic" else {}
    self.gen_tx = loop.make_optimizer(cfg)
    self.critic_tx = loop.make_optimizer(cfg, cfg.critic_learning_rate, cfg.n_critic)
    # stage2.seed re-seeds stage 2 alone, on the same stage 1 (whose seed is config.seed).
    seed = config.seed if cfg.seed < 0 else cfg.seed
    root = jax.random.fold_in(jax.random.key(seed), 3)
    self.init_key, self.base_key = jax.random.split(root)

  # ------------------------------------------------------------------ state

  def init_state(self, x_example: jax.Array) -> loop.TrainState:
    keys = jax.random.split(self.init_key, 1 + len(self.critics))
    eta = jnp.zeros((1, self.cfg.noise_dim))
    z = jnp.zeros((1, self.latent_dim))
    params = {"generator": self.generator.init(keys[0], eta, x_example)["params"]}
    opt = {"generator": self.gen_tx.init(params["generator"])}
    if self.cfg.ema_decay > 0:  # Averaged weights to sample with; no optimiser of their own.
      params["generator_ema"] = jax.tree.map(jnp.copy, params["generator"])
    for k, (name, critic) in zip(keys[1:], self.critics.items(), strict=True):
      params[name] = critic.init(k, x_example, z)["params"]
      opt[name] = self.critic_tx.init(params[name])
    return loop.TrainState.create(params, opt)

  # ------------------------------------------------------------------ losses

  def generate_latents(self, gen_params, x: jax.Array, key: jax.Array, batch_shape=None):
    """G(η, x) for conditions x with leading `batch_shape` (default: (len(x),))."""
    batch_shape = (x.shape[0],) if batch_shape is None else tuple(batch_shape)
    eta = jax.random.normal(key, (*batch_shape, self.cfg.noise_dim))
    return self.generator.apply({"params": gen_params}, eta, x)

  def _critic_fn(self, name: str, params, x: jax.Array | None):
    """f(x, ·) of the critic `name` (a `CriticFn`)."""
    return wasserstein.critic_fn(self.critics[name], params[name], x)

  def _critic_phase(self, params, opt_state, data, key):
    """n_critic updates of the critic(s) against the current generator.

    The generator does not change during this phase, so all n_critic batches and
    their generated latents are drawn up front, in one larger (faster) generator call.
    """
    cfg, gen_params, mesh = self.cfg, params["generator"], self.mesh
    names = list(self.critics)
    shape = (cfg.n_critic, cfg.batch_size)
    k_real, k_eta, k_prior, k_eta2, k_un, k_steps = jax.random.split(key, 6)
    x, z = _sample(k_real, data, shape, mesh, cfg.real_noise)
    batches = {"x": x, "z": z, "fake": self.generate_latents(gen_params, x, k_eta, shape)}
    if "marginal_critic" in names:
      xp = _sample_rows(k_prior, data["x"], shape, mesh)
      batches["fake_m"] = self.generate_latents(gen_params, xp, k_eta2, shape)
      batches["real_m"] = _sample_rows(k_un, data["z_unpaired"], shape, mesh)
    batches = jax.lax.stop_gradient(batches)

    def loss(cp, b, k):
      k_gp, k_gp2 = jax.random.split(k)
      f = self._critic_fn("critic", cp, b["x"])
      total, m = wasserstein.critic_loss(f, b["z"], b["fake"], k_gp, cfg.gp_weight, cfg.gp_stride)
      if "marginal_critic" in cp:
        g = self._critic_fn("marginal_critic", cp, None)
        t2, m2 = wasserstein.critic_loss(
          g, b["real_m"], b["fake_m"], k_gp2, cfg.gp_weight, cfg.gp_stride
        )
        total = total + t2
        m = {**m, "w1_marginal": m2["w1_critic"]}
      return total, m

    return wasserstein.critic_phase(
      loss,
      self.critic_tx,
      {n: params[n] for n in names},
      {n: opt_state[n] for n in names},
      batches,
      k_steps,
      cfg.n_critic,
      self.unroll,
    )

  def _generator_loss(self, gen_params, critic_params, data, key):
    cfg = self.cfg
    k_real, k_eta, k_prior, k_eta2, k_un = jax.random.split(key, 5)
    x, z = _sample(k_real, data, (cfg.batch_size,), self.mesh, cfg.real_noise)
    fake = self.generate_latents(gen_params, x, k_eta)
    metrics = {}

    def sinkhorn():  # S_ε between the joint clouds (cond_scale · φ(x), z) of G and of data.
      phi = wasserstein.condition_features(x, self.task.cond_kind, self.task.num_classes)
      return wasserstein.sinkhorn_divergence(
        wasserstein.joint_points(phi, fake, cfg.cond_scale),
        wasserstein.joint_points(phi, z, cfg.cond_scale),
        epsilon=cfg.epsilon,
        max_iterations=cfg.sinkhorn_iterations,
      )

    if cfg.estimator == "critic":
      loss = wasserstein.generator_loss(self._critic_fn("critic", critic_params, x), fake)
      if cfg.ot_weight > 0:  # A Sinkhorn term beside the critic: it leaves no real point far.
        metrics["sinkhorn"] = sinkhorn()
        loss = loss + cfg.ot_weight * metrics["sinkhorn"]
    else:
      loss = metrics["sinkhorn"] = sinkhorn()
    if cfg.unpaired_weight > 0:
      xp = _sample_rows(k_prior, data["x"], (cfg.batch_size,), self.mesh)
      fake_m = self.generate_latents(gen_params, xp, k_eta2)
      if cfg.estimator == "critic":
        marginal_fn = self._critic_fn("marginal_critic", critic_params, None)
        marginal = wasserstein.generator_loss(marginal_fn, fake_m)
      else:
        real_m = _sample_rows(k_un, data["z_unpaired"], (cfg.batch_size,), self.mesh)
        marginal = wasserstein.sinkhorn_divergence(
          fake_m, real_m, epsilon=cfg.epsilon, max_iterations=cfg.sinkhorn_iterations
        )
        metrics["sinkhorn_marginal"] = marginal
      loss = loss + cfg.unpaired_weight * marginal
    if cfg.consistency_weight > 0:  # The known degradation: pool(D(G(η, x))) should be x.
      z_raw = fake * data["std"][None] + data["mean"][None]
      images = jax.nn.sigmoid(self.decoder.apply({"params": data["decoder"]}, z_raw))
      mse = jnp.mean(jnp.square(block_mean(images, self.task.factor) - x))
      metrics["consistency_mse"] = mse
      loss = loss + cfg.consistency_weight * mse
    metrics["gen_loss"] = loss
    return loss, metrics

  def update(self, state: loop.TrainState, data: dict) -> tuple[loop.TrainState, dict]:
    """One generator update (after n_critic critic updates for the critic estimator)."""
    key = jax.random.fold_in(self.base_key, state.step)
    k_critic, k_gen = jax.random.split(key)
    params, opt_state = dict(state.params), dict(state.opt_state)
    metrics, finite = {}, jnp.array(True)
    if self.critics:
      cparams, copt, metrics, finite = self._critic_phase(params, opt_state, data, k_critic)
      params.update(cparams)
      opt_state.update(copt)
    critic_params = {n: params[n] for n in self.critics}
    (_, gm), grads = jax.value_and_grad(self._generator_loss, has_aux=True)(
      params["generator"], critic_params, data, k_gen
    )
    params["generator"], opt_state["generator"] = loop.apply_gradients(
      self.gen_tx, grads, opt_state["generator"], params["generator"]
    )
    if "generator_ema" in params:
      params["generator_ema"] = loop.ema_update(
        params["generator_ema"], params["generator"], self.cfg.ema_decay, state.step
      )
    finite = finite & loop.all_finite(gm, grads)
    cond = loop.conditional_update(self.cfg.arch == "conv")
    new_state = loop.guarded_update(state, finite, params, opt_state, conditional=cond)
    return new_state, {**metrics, **gm}

  def make_train_step(self, shardings, data_shardings):
    """Jitted (state, data) → (state, metrics) running `steps_per_call` updates."""
    k = self.cfg.steps_per_call

    def train_step(state, data):
      update = lambda s, _: self.update(s, data)
      state, metrics = jax.lax.scan(update, state, None, length=k, unroll=self.unroll)
      return state, jax.tree.map(lambda v: v[-1], metrics)

    return jax.jit(
      train_step,
      in_shardings=(shardings, data_shardings),
      out_shardings=(shardings, parallel.replicated(self.mesh)),
      donate_argnums=0,
    )


def sampling_params(params: dict):
  """The generator weights to sample with: their moving average when `ema_decay` > 0."""
  return params.get("generator_ema", params["generator"])


def train(
  config: ml_collections.ConfigDict,
  task: Task,
  data: dict,
  mesh,
  workdir,
  decoder=None,
  latent_shape=None,
):
  """Trains (or resumes, or skips) stage 2 on standardised paired latents.

  Args:
    config: the full config.
    task: the task (condition kind).
    data: {'x': (N, ...), 'z': (N, d), 'z_unpaired': (M, d)} jax arrays on `mesh`,
      z standardised; optionally 'cdf' (N,), the cumulative sampling distribution of
      weighted pairs (`semi.sampling_cdf`; default: uniform).
      With `consistency_weight > 0` also 'decoder' (the decoder's parameters) and the
      latent 'mean', 'std'.
    mesh: device mesh.
    workdir: run directory; checkpoints go to `workdir/stage2`.
    decoder: the stage-1 decoder module (for `consistency_weight > 0`).
    latent_shape: (h, w, c) of the latents (for `arch='conv'`).

  Returns:
    (Stage2, params, history).
  """
  cfg = config.stage2
  if cfg.consistency_weight > 0 and (decoder is None or "decoder" not in data):
    raise ConfigError("stage2.consistency_weight > 0: pass the decoder and data['decoder']")
  s2 = Stage2(config, task, int(data["z"].shape[1]), mesh, decoder, latent_shape)
  # A host array: jit may not close over a global array that spans other processes.
  x_example = np.zeros((1, *data["x"].shape[1:]), data["x"].dtype)
  state, shardings = parallel.create_sharded(lambda: s2.init_state(x_example), mesh)
  data_shardings = jax.tree.map(lambda _: parallel.replicated(mesh), data)
  data = jax.device_put(data, data_shardings)
  step_fn = s2.make_train_step(shardings, data_shardings)
  loop_cfg = loop.LoopConfig.from_config("stage2", cfg)
  manager = checkpoints.make_manager(
    pathlib.Path(workdir) / "stage2", save_every=cfg.save_every, keep=cfg.keep
  )
  fields = cfg.to_dict()
  if config.semi.enabled:  # Other pairs, another stage 2; the paper's fingerprint is unchanged.
    fields["semi"] = config.semi.to_dict()
  meta = {"config": config_lib.fingerprint(fields)}
  state, history = loop.run(loop_cfg, state, step_fn, lambda step: data, manager, meta)
  manager.close()
  return s2, state.params, history
