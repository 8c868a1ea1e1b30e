"""Tests of lsdm_jax.stage1."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lsdm_jax import config as config_lib
from lsdm_jax import loop, parallel, stage1
from lsdm_jax.errors import ConfigError, DataError


def _cfg(regularizer="kl", loss="bce"):
  c = config_lib.base_config().stage1
  c.features, c.hidden, c.latent_dim = (4, 8), 32, 4
  c.regularizer, c.loss, c.steps, c.learning_rate = regularizer, loss, 100, 3e-3
  c.warmup_steps = 1
  return c


@pytest.mark.parametrize(
  "regularizer, loss",
  [
    ("kl", "bce"),
    pytest.param("l2", "mse", marks=pytest.mark.slow),
    pytest.param("none", "bce", marks=pytest.mark.slow),
  ],
)
def test_train_step_lowers_the_loss_on_a_sharded_batch(mnist5k, regularizer, loss):
  cfg = _cfg(regularizer, loss)
  mesh = parallel.make_mesh(8, 1)
  model = stage1.make_model(cfg, (28, 28, 1))
  init = functools.partial(stage1.init_state, model, jax.random.key(0), cfg, (28, 28, 1))
  state, shardings = parallel.create_sharded(init, mesh)
  tx = stage1.make_optimizer(cfg, state.params)
  step = stage1.make_train_step(model, tx, cfg, mesh, shardings, jax.random.key(1))
  images = parallel.global_batch(mesh, mnist5k.train_images[:32].astype(np.float32) / 255.0)
  losses = []
  for _ in range(15):
    state, metrics = step(state, images)
    jax.block_until_ready(state)
    losses.append(float(metrics["loss"]))
  assert losses[-1] < 0.8 * losses[0]
  assert int(state.step) == 15 and int(state.nonfinite) == 0
  assert state.params["encoder"]["z"]["kernel"].sharding.is_fully_replicated


def test_check_config_names_the_field_and_the_fix():
  c = config_lib.base_config()
  stage1.check_config(c)  # The defaults pass.
  for field, value, message in [
    ("arch", "vit", r"stage1.arch='vit' is not one of \('conv', 'resnet'\)"),
    ("schedule", "step", r"stage1.schedule='step' is not one of"),
    ("disc_weight", 0.5, r"stage1.disc_weight > 0 needs stage1.arch='resnet'"),
    ("log_every", 0, r"stage1.log_every=0 must be a positive integer"),
    ("batch_size", 12, r"stage1.batch_size=12"),
  ]:
    bad = config_lib.base_config()
    bad.stage1[field] = value
    with pytest.raises(ConfigError, match=message):
      stage1.check_config(bad)


def _tiny_resnet(**fields):
  c = config_lib.base_config().stage1
  c.arch, c.ch, c.ch_mult, c.num_res_blocks, c.z_channels = "resnet", 8, (1, 2), 1, 2
  c.disc_features, c.disc_layers, c.loss, c.reg_weight = 8, 2, "l1", 1e-6
  c.update(fields)
  return c


def assert_grads_close(got, want, rtol=1e-4):
  """Leaf by leaf, to `rtol` and to float rounding at the scale of the whole tree's
  gradients: some leaves' are ~0 exactly (e.g. biases before a GroupNorm), where only
  that scale is meaningful."""
  scale = max(float(np.abs(g).max()) for g in jax.tree.leaves(want))
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
    np.testing.assert_allclose(g, w, rtol=rtol, atol=1e-4 * scale)


def test_adaptive_weight_and_gradients_match_a_hand_computation():
  cfg = _tiny_resnet(disc_weight=0.5, disc_start=3)
  model = stage1.make_model(cfg, (16, 16, 3))
  images = jax.random.uniform(jax.random.key(0), (4, 16, 16, 3))
  params = model.init(jax.random.key(1), images)["params"]
  key = jax.random.key(2)
  grads, metrics = jax.jit(lambda p, step: stage1.gradients(model, cfg, p, images, key, step))(
    params, jnp.asarray(3)
  )

  # By hand: the reconstruction loss and the adversarial loss as functions of the
  # decoder's last kernel alone, and latent diffusion's ratio of their gradient norms.
  conv = max(
    (k for k in params["decoder"]["ResnetDecoder_0"] if k.startswith("Conv_")),
    key=lambda k: int(k.split("_")[1]),
  )

  def with_kernel(kernel):
    p = jax.tree.map(lambda x: x, params)
    p["decoder"]["ResnetDecoder_0"][conv]["kernel"] = kernel
    return p

  def nll(p):
    return stage1.loss_fn(model, cfg, p, images, key)[0]

  def adv(p):
    fake = stage1.loss_fn(model, cfg, p, images, key)[1][1]
    return -jnp.mean(model.apply({"params": p}, fake, method="discriminate"))

  kernel = params["decoder"]["ResnetDecoder_0"][conv]["kernel"]
  g_nll = jax.grad(lambda w: nll(with_kernel(w)))(kernel)
  g_adv = jax.grad(lambda w: adv(with_kernel(w)))(kernel)
  want = 0.5 * float(jnp.linalg.norm(g_nll) / (jnp.linalg.norm(g_adv) + 1e-4))
  assert float(metrics["adaptive_weight"]) == pytest.approx(want, rel=1e-4)
  assert want > 0

  # The autoencoder's gradients are those of nll + λ·adv (λ fixed); the discriminator's
  # those of its hinge loss alone.
  total = jax.grad(lambda p: nll(p) + want * adv(p))(params)
  for part in ("encoder", "decoder"):
    assert_grads_close(grads[part], total[part], rtol=1e-3)
  fake = jax.lax.stop_gradient(stage1.loss_fn(model, cfg, params, images, key)[1][1])
  hinge = jax.grad(lambda d: stage1.hinge_loss(model, {**params, "disc": d}, images, fake))
  assert_grads_close(grads["disc"], hinge(params["disc"]))

  # Before disc_start: the reconstruction loss alone, and the discriminator stands still.
  before, _ = jax.jit(lambda p: stage1.gradients(model, cfg, p, images, key, jnp.asarray(2)))(
    params
  )
  plain = jax.grad(nll)(params)
  assert_grads_close(before["decoder"], plain["decoder"])
  assert all(float(jnp.abs(g).max()) == 0 for g in jax.tree.leaves(before["disc"]))


def test_the_discriminator_has_an_optimiser_of_its_own():
  cfg = _tiny_resnet(disc_weight=0.5, grad_clip=1.0)
  model = stage1.make_model(cfg, (16, 16, 3))
  state = stage1.init_state(model, jax.random.key(0), cfg, (16, 16, 3))
  tx = stage1.make_optimizer(cfg, state.params)
  # Huge discriminator gradients are clipped on their own: the autoencoder's update is the
  # one it would get alone.
  grads = jax.tree.map(jnp.ones_like, state.params)
  grads["disc"] = jax.tree.map(lambda g: 1e6 * g, grads["disc"])
  params, _ = loop.apply_gradients(tx, grads, state.opt_state, state.params)
  alone = loop.make_optimizer(cfg)
  ae = {k: v for k, v in state.params.items() if k != "disc"}
  ae_grads = {k: v for k, v in grads.items() if k != "disc"}
  want, _ = loop.apply_gradients(alone, ae_grads, alone.init(ae), ae)
  for got, expected in zip(
    jax.tree.leaves(params["decoder"]), jax.tree.leaves(want["decoder"]), strict=True
  ):
    np.testing.assert_array_equal(got, expected)


def test_perceptual_weight_without_a_weights_file_is_one_line_naming_the_export(tmp_path):
  c = config_lib.base_config()
  c.stage1.perceptual_weight = 1.0
  c.stage1.lpips_weights = str(tmp_path / "missing.npz")
  with pytest.raises(DataError, match="lpips.LPIPS") as e:
    stage1.check_config(c)
  assert "\n" not in str(e.value) and "perceptual_weight=0" in str(e.value)
