"""Tests of lsdm_jax.parallel: the same global batch gives the same step on any mesh.

Meshes (8, 1), (4, 2) and (1, 1) of the 8 simulated CPU devices run one train step of
stage 1 and of stage 2 (both W1 estimators) and one generate call; losses, parameters
and images must agree to float tolerance. Kernels are split over `model` from 64
entries on, so the (4, 2) mesh really runs tensor-parallel layers.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lsdm_jax import config as config_lib
from lsdm_jax import parallel, sampling, stage1, stage2
from lsdm_jax.data.tasks import Task
from lsdm_jax.errors import ConfigError
from lsdm_jax.models.autoencoder import Decoder

MESHES = [(8, 1), (4, 2), (1, 1)]


@pytest.fixture(autouse=True)
def _split_small_kernels(monkeypatch):
  monkeypatch.setattr(parallel, "MIN_SPLIT_SIZE", 64)


def _assert_trees_close(a, b, rtol=1e-4, atol=1e-5):
  jax.tree.map(
    functools.partial(np.testing.assert_allclose, rtol=rtol, atol=atol),
    parallel.to_host(a),
    parallel.to_host(b),
  )


def test_make_mesh_sizes_and_errors():
  assert dict(parallel.make_mesh().shape) == {"data": 8, "model": 1}
  assert dict(parallel.make_mesh(-1, 2).shape) == {"data": 4, "model": 2}
  assert parallel.make_mesh(2, 1).devices.size == 2  # Fewer devices than there are.
  with pytest.raises(ConfigError, match="mesh.model=3"):
    parallel.make_mesh(-1, 3)
  with pytest.raises(ConfigError, match="does not fit"):
    parallel.make_mesh(8, 2)


def test_batch_size_must_divide_over_data():
  mesh = parallel.make_mesh(8, 1)
  parallel.check_batch_size(24, mesh, "stage1.batch_size")
  with pytest.raises(ConfigError, match=r"stage1.batch_size=20 .* multiple of 8"):
    parallel.check_batch_size(20, mesh, "stage1.batch_size")


def test_param_shardings_split_only_big_kernels_over_model():
  mesh = parallel.make_mesh(4, 2)
  tree = {"big": np.zeros((16, 8)), "odd": np.zeros((16, 7)), "bias": np.zeros((64,))}
  sh = parallel.param_shardings(mesh, tree)
  assert sh["big"].spec == jax.sharding.PartitionSpec(None, "model")
  assert sh["odd"].is_fully_replicated and sh["bias"].is_fully_replicated


def test_process_rows_and_global_rows_on_one_process():
  mesh = parallel.make_mesh(4, 2)
  np.testing.assert_array_equal(parallel.process_rows(parallel.data_sharding(mesh), 12), range(12))
  a = parallel.global_rows(mesh, lambda rows: np.arange(10)[rows] * 2, 10)
  assert a.shape == (12,) and a.sharding.spec == jax.sharding.PartitionSpec("data")
  np.testing.assert_array_equal(np.asarray(a), [*range(0, 20, 2), 18, 18])


# --------------------------------------------------------------------------- stage 1


def _on_mesh(state, mesh):
  """The same initial state, placed with `mesh`'s shardings (one init for all meshes)."""
  shardings = parallel.param_shardings(mesh, state)
  return jax.device_put(state, shardings), shardings


def test_stage1_step_is_the_same_on_every_mesh():
  cfg = config_lib.base_config().stage1
  cfg.features, cfg.hidden, cfg.latent_dim, cfg.steps, cfg.warmup_steps = (4,), 16, 4, 10, 1
  images = np.random.default_rng(0).random((16, 8, 8, 1), np.float32)
  model = stage1.make_model(cfg, images.shape[1:])
  init = parallel.to_host(stage1.init_state(model, jax.random.key(0), cfg, images.shape[1:]))
  tx = stage1.make_optimizer(cfg, init.params)
  results = {}
  for m in MESHES:
    mesh = parallel.make_mesh(*m)
    state, shardings = _on_mesh(init, mesh)
    step = stage1.make_train_step(model, tx, cfg, mesh, shardings, jax.random.key(1))
    losses = []
    for _ in range(2):
      state, metrics = step(state, parallel.global_batch(mesh, images))
      jax.block_until_ready(state)
      losses.append(float(metrics["loss"]))
    results[m] = state, losses
  split = results[(4, 2)][0].params["decoder"]["Dense_1"]["kernel"].sharding
  assert split.spec == jax.sharding.PartitionSpec(None, "model")  # Tensor-parallel there.
  ref_state, ref_losses = results[(1, 1)]
  assert ref_losses[1] < ref_losses[0]
  for m in MESHES[:2]:
    state, losses = results[m]
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-5)
    _assert_trees_close(state.params, ref_state.params)


# --------------------------------------------------------------------------- stage 2


@pytest.mark.parametrize("estimator", ["critic", pytest.param("sinkhorn", marks=pytest.mark.slow)])
def test_stage2_step_is_the_same_on_every_mesh(estimator):
  config = config_lib.base_config()
  s = config.stage2
  s.estimator, s.noise_dim, s.hidden, s.critic_hidden, s.cond_features = (
    estimator,
    4,
    (16, 16),
    (16, 16),
    8,
  )
  s.batch_size, s.steps_per_call, s.n_critic, s.sinkhorn_iterations = 16, 2, 2, 50
  s.epsilon = 0.5
  task = Task("classcond", "label", (), num_classes=3)
  rng = np.random.default_rng(0)
  data = {
    "x": np.arange(40, dtype=np.int32) % 3,
    "z": rng.standard_normal((40, 4)).astype(np.float32),
    "z_unpaired": rng.standard_normal((8, 4)).astype(np.float32),
  }
  init = parallel.to_host(stage2.Stage2(config, task, 4, None).init_state(data["x"][:1]))
  results = {}
  for m in MESHES:
    mesh = parallel.make_mesh(*m)
    s2 = stage2.Stage2(config, task, 4, mesh)
    state, shardings = _on_mesh(init, mesh)
    data_sh = {k: parallel.replicated(mesh) for k in data}
    state, metrics = s2.make_train_step(shardings, data_sh)(state, jax.device_put(data, data_sh))
    jax.block_until_ready(state)
    results[m] = state, parallel.to_host(metrics)
  ref_state, ref_metrics = results[(1, 1)]
  assert int(ref_state.step) == 2
  for m in MESHES[:2]:
    state, metrics = results[m]
    assert metrics.keys() == ref_metrics.keys()
    for k in metrics:
      np.testing.assert_allclose(metrics[k], ref_metrics[k], rtol=1e-4, atol=1e-5, err_msg=k)
    _assert_trees_close(state.params, ref_state.params)


# --------------------------------------------------------------------------- generate


def test_generate_is_the_same_on_every_mesh(key):
  gen = stage2.make_generator(config_lib.base_config().stage2, Task("c", "label", (), 4), 3)
  gen = gen.clone(hidden=(16,), cond_features=8, noise_dim=2)
  dec = Decoder((8, 8, 1), (8, 4), 16)
  params = sampling.generation_params(
    gen.init(key, jnp.zeros((1, 2)), jnp.zeros((1,), jnp.int32))["params"],
    {"decoder": dec.init(key, jnp.zeros((1, 3)))["params"]},
    np.full(3, 0.5, np.float32),
    np.full(3, 2.0, np.float32),
  )
  x = np.arange(14) % 4  # Two calls of 8 rows, the second padded.
  out = {}
  for m in MESHES:
    mesh = parallel.make_mesh(*m)
    fn = sampling.make_generate_fn(gen, dec, noise_dim=2, mesh=mesh)
    out[m] = sampling.generate_batched(fn, params, x, key, batch_size=8, mesh=mesh)
  assert out[(1, 1)].shape == (14, 8, 8, 1)
  for m in MESHES[:2]:
    np.testing.assert_allclose(out[m], out[(1, 1)], atol=1e-6)
