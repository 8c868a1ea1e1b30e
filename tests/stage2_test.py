"""Tests of lsdm_jax.stage2 on toy latents whose conditional laws are known.

Class c's latents are N(μ_c, σ_c² I) with distinct means and spreads; a short run
must move the generator's per-class means and spreads towards them.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lsdm_jax import config as config_lib
from lsdm_jax import parallel, stage2
from lsdm_jax.data.tasks import Task

MEANS = np.array([[-2.0, 0.0], [2.0, 0.0], [0.0, 2.0]], np.float32)
STDS = np.array([0.3, 0.6, 0.15], np.float32)


def _toy(n=600, seed=0):
  rng = np.random.default_rng(seed)
  x = np.arange(n) % 3
  z = MEANS[x] + STDS[x, None] * rng.standard_normal((n, 2)).astype(np.float32)
  return {"x": jnp.asarray(x, jnp.int32), "z": jnp.asarray(z), "z_unpaired": jnp.asarray(z[:64])}


def _config(estimator):
  c = config_lib.base_config()
  s = c.stage2
  s.estimator, s.noise_dim, s.hidden, s.critic_hidden, s.cond_features = (
    estimator,
    2,
    (64, 64),
    (64, 64),
    16,
  )
  s.batch_size, s.steps_per_call = 128, 50
  s.learning_rate = 2e-3 if estimator == "sinkhorn" else 1e-3
  s.critic_learning_rate = 2e-3
  s.epsilon, s.cond_scale = 0.05, 10.0
  s.real_noise = 0.0  # The exact conditional laws are the target here, not a smoothed one.
  return c


def _class_stats(s2, params, key):
  x = jnp.repeat(jnp.arange(3), 400)
  z = np.asarray(s2.generate_latents(params["generator"], x, key))
  x = np.asarray(x)
  return (
    np.stack([z[x == c].mean(0) for c in range(3)]),
    np.array([z[x == c].std(0).mean() for c in range(3)]),
  )


@pytest.mark.parametrize(
  "estimator, calls, gp_stride",
  [("sinkhorn", 4, 1), pytest.param("critic", 12, 1, marks=pytest.mark.slow), ("critic", 12, 2)],
)
def test_generator_learns_the_conditional_laws(key, estimator, calls, gp_stride):
  config = _config(estimator)
  config.stage2.gp_stride = gp_stride  # 2: the penalty on every other example only.
  # One device: this is about what G learns (tests/parallel_test.py checks that every mesh
  # takes the same step), and 8 simulated devices on a small CPU mostly add partitioning.
  mesh = parallel.make_mesh(1, 1)
  task = Task("classcond", "label", (), num_classes=3)
  s2 = stage2.Stage2(config, task, 2, mesh)
  data = _toy()
  state, shardings = parallel.create_sharded(lambda: s2.init_state(data["x"][:1]), mesh)
  data_sh = jax.tree.map(lambda _: parallel.replicated(mesh), data)
  step = s2.make_train_step(shardings, data_sh)
  mean0, _ = _class_stats(s2, state.params, key)
  # A GAN's generator circles its target; statistics averaged over the last calls (as
  # for Polyak-averaged weights) measure where it circles, not one point of its orbit.
  last = []
  for i in range(calls):
    state, metrics = step(state, data)
    if i >= calls - 4:
      last.append(_class_stats(s2, state.params, key))
  means = np.mean([m for m, _ in last], axis=0)
  stds = np.mean([s for _, s in last], axis=0)
  err0 = np.linalg.norm(mean0 - MEANS, axis=1).mean()
  err = np.linalg.norm(means - MEANS, axis=1).mean()
  assert err < 0.35 < err0
  # Spreads follow the classes' own spreads (a collapse to the means would fail this).
  assert np.all(np.abs(stds - STDS) < 0.5 * STDS + 0.05), stds
  assert int(state.nonfinite) == 0 and np.isfinite(float(metrics["gen_loss"]))


def test_unpaired_marginal_term_adds_a_critic_and_a_metric(key):
  config = _config("critic")
  config.stage2.unpaired_weight = 0.5
  config.stage2.steps_per_call = 2
  config.stage2.gp_stride = 4  # Both critics' penalties on a subsample (the marginal has no x).
  mesh = parallel.make_mesh(1, 1)
  s2 = stage2.Stage2(config, Task("classcond", "label", (), num_classes=3), 2, mesh)
  data = _toy()
  state = s2.init_state(data["x"][:1])
  assert set(state.params) == {"generator", "generator_ema", "critic", "marginal_critic"}
  step = s2.make_train_step(
    jax.tree.map(lambda _: parallel.replicated(mesh), state),
    jax.tree.map(lambda _: parallel.replicated(mesh), data),
  )
  state, metrics = step(state, data)
  assert "w1_marginal" in metrics and np.isfinite(float(metrics["w1_marginal"]))
  assert np.isfinite(float(metrics["gradient_penalty"]))


def test_ot_weight_adds_the_sinkhorn_term_to_the_generator_s_loss():
  mesh = parallel.make_mesh(1, 1)
  data = _toy()
  rep = jax.tree.map(lambda _: parallel.replicated(mesh), data)
  after = {}
  for weight in (0.0, 1.0):
    config = _config("critic")
    config.stage2.ot_weight, config.stage2.steps_per_call, config.stage2.n_critic = weight, 1, 1
    s2 = stage2.Stage2(config, Task("classcond", "label", (), num_classes=3), 2, mesh)
    state = s2.init_state(data["x"][:1])
    step = s2.make_train_step(jax.tree.map(lambda _: parallel.replicated(mesh), state), rep)
    state, metrics = step(state, data)
    assert ("sinkhorn" in metrics) == (weight > 0)
    after[weight] = (state.params["generator"], state.params["critic"], metrics)
  assert np.isfinite(float(after[1.0][2]["sinkhorn"])) and float(after[1.0][2]["sinkhorn"]) > 0
  # The same draws: the critic takes the same step, the generator another one.
  for a, b in zip(jax.tree.leaves(after[0.0][1]), jax.tree.leaves(after[1.0][1]), strict=True):
    np.testing.assert_array_equal(a, b)
  assert any(
    not np.array_equal(a, b)
    for a, b in zip(jax.tree.leaves(after[0.0][0]), jax.tree.leaves(after[1.0][0]), strict=True)
  )


def test_ema_weights_are_kept_beside_the_trained_ones_and_used_for_sampling(key):
  config = _config("critic")
  config.stage2.ema_decay = 0.9
  config.stage2.steps_per_call = 3
  mesh = parallel.make_mesh(1, 1)
  s2 = stage2.Stage2(config, Task("classcond", "label", (), num_classes=3), 2, mesh)
  data = _toy()
  state = s2.init_state(data["x"][:1])
  assert set(state.params) == {"generator", "generator_ema", "critic"}
  assert set(state.opt_state) == {"generator", "critic"}  # The average is not optimised.
  start = jax.tree.map(np.asarray, state.params["generator"])
  step = s2.make_train_step(
    jax.tree.map(lambda _: parallel.replicated(mesh), state),
    jax.tree.map(lambda _: parallel.replicated(mesh), data),
  )
  state, _ = step(state, data)
  trained, ema = state.params["generator"], state.params["generator_ema"]
  assert stage2.sampling_params(state.params) is ema
  # Three updates with the warmed-up decays 0.1, 2/11, 3/12: the average has moved
  # from the initial weights but lags the trained ones.
  for w0, w, e in zip(*map(jax.tree.leaves, (start, trained, ema)), strict=True):
    if np.abs(np.asarray(w) - w0).max() > 0:
      assert 0 < np.abs(np.asarray(e) - w).max() and 0 < np.abs(np.asarray(e) - w0).max()
  # Without an average, sampling uses the trained weights.
  assert stage2.sampling_params({"generator": trained}) is trained


def test_stage2_seed_reseeds_stage_2_alone():
  task, mesh = Task("classcond", "label", (), num_classes=3), parallel.make_mesh(1, 1)
  x = _toy()["x"][:1]

  def init(seed, stage2_seed):
    config = _config("critic")
    config.seed, config.stage2.seed = seed, stage2_seed
    return jax.tree.leaves(stage2.Stage2(config, task, 2, mesh).init_state(x).params)

  def same(a, b):
    return all(np.array_equal(u, v) for u, v in zip(a, b, strict=True))

  default = init(0, -1)
  assert same(default, init(0, 0))  # -1 means the run's seed.
  assert not same(default, init(0, 1))  # Another stage-2 seed, the same run seed.
  assert same(init(0, 1), init(5, 1))  # The run's seed (stage 1's) does not enter.


@pytest.mark.parametrize(
  ("arch", "env", "unrolled"), [("conv", None, True), ("conv", "0", False), ("mlp", None, False)]
)
def test_conv_scans_are_unrolled_only_where_the_cpu_workarounds_apply(
  arch, env, unrolled, monkeypatch
):
  if env is None:
    monkeypatch.delenv("LSDM_JAX_CPU_WORKAROUNDS", raising=False)
  else:
    monkeypatch.setenv("LSDM_JAX_CPU_WORKAROUNDS", env)
  cfg = config_lib.base_config().stage2
  cfg.arch = arch
  assert stage2.unroll_scans(cfg) is unrolled
