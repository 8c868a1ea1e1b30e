"""Baseline: a conditional Wasserstein generator in pixel space, with no autoencoder.

After the Wasserstein generative conditional sampler (Liu et al., 2021): G(η, x) → y in one
pass, trained so that the law of (x, G(η, x)) matches that of the paired (x, y) in W1, with a
WGAN-GP critic f(x, y). It is LSDM without stage 1 (pixels instead of a latent space, paired
examples only), so the comparison measures what the autoencoder contributes. Each generator
update follows `n_critic` critic updates (`wasserstein.critic_phase`). Conditions are int32
labels. Settings: the `pixel_wgcs` section of `base_config()`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import Mesh

from lsdm_jax import loop, wasserstein
from lsdm_jax.baselines import paired_data
from lsdm_jax.models.generator import noise_per_row


class PixelGenerator(nn.Module):
  """G(η, x) → image (H, W, C) in [0, 1]: an MLP on concat(η, label embedding), sigmoid."""

  image_shape: Sequence[int]
  num_classes: int
  noise_dim: int = 32
  embed_features: int = 32
  widths: Sequence[int] = (256, 512, 1024)

  @nn.compact
  def __call__(self, eta: jax.Array, x: jax.Array) -> jax.Array:
    h = jnp.concatenate([eta, nn.Embed(self.num_classes, self.embed_features)(x)], axis=-1)
    for width in self.widths:
      h = nn.gelu(nn.Dense(width)(h))
    logits = nn.Dense(math.prod(self.image_shape))(h)
    return nn.sigmoid(logits).reshape(eta.shape[0], *self.image_shape)


class PixelCritic(nn.Module):
  """f(x, y) → R: an MLP on concat(2y − 1 flattened, e(x)). The first layer is split into
  the label's share (`condition`, once per batch) and the image's (`head`)."""

  num_classes: int
  embed_features: int = 32
  widths: Sequence[int] = (512, 256)

  def setup(self):
    self.embed = nn.Embed(self.num_classes, self.embed_features)
    self.cond_dense = nn.Dense(self.widths[0], use_bias=False)
    self.image_dense = nn.Dense(self.widths[0])
    self.layers = [nn.Dense(w) for w in self.widths[1:]]
    self.out = nn.Dense(1)

  def condition(self, x: jax.Array) -> jax.Array:
    """x (B,) → (B, widths[0])."""
    return self.cond_dense(self.embed(x))

  def head(self, cond: jax.Array, y_flat: jax.Array) -> jax.Array:
    """f (B,) for flattened images y_flat (B, H·W·C) in [0, 1] given `condition(x)`."""
    h = nn.gelu(cond + self.image_dense(2.0 * y_flat - 1.0))
    for layer in self.layers:
      h = nn.gelu(layer(h))
    return self.out(h)[..., 0]

  def __call__(self, x: jax.Array, y: jax.Array) -> jax.Array:
    return self.head(self.condition(x), y.reshape(y.shape[0], -1))


def make_models(
  image_shape: Sequence[int], num_classes: int, config: ml_collections.ConfigDict
) -> tuple[PixelGenerator, PixelCritic]:
  """The generator and critic of `config` (a `pixel_wgcs` section)."""
  generator = PixelGenerator(
    tuple(image_shape), num_classes, config.noise_dim, config.embed_features, tuple(config.widths)
  )
  critic = PixelCritic(num_classes, config.embed_features, tuple(config.critic_widths))
  return generator, critic


def _optimizers(config):
  """(generator's, critic's): the section's optimiser at each network's learning rate."""
  critic = loop.make_optimizer(config, config.critic_learning_rate, config.n_critic)
  return loop.make_optimizer(config), critic


@functools.partial(jax.jit, static_argnames=("generator", "critic", "config"))
def init_state(generator, critic, config, y_example: jax.Array, key: jax.Array):
  """Params and optimiser states {'generator', 'critic'}; y_example: one image (1, H, W, C)."""
  k_gen, k_critic = jax.random.split(key)
  x = jnp.zeros((1,), jnp.int32)
  params = {
    "generator": generator.init(k_gen, jnp.zeros((1, config.noise_dim)), x)["params"],
    "critic": critic.init(k_critic, x, jnp.zeros_like(y_example))["params"],
  }
  gen_tx, critic_tx = _optimizers(config)
  opt = {"generator": gen_tx.init(params["generator"]), "critic": critic_tx.init(params["critic"])}
  return loop.TrainState.create(params, opt)


def train_step(state: loop.TrainState, data, key, *, generator, critic, config, sharding=None):
  """`n_critic` critic updates then one generator update on data = (x (N,), y (N, H, W, C));
  randomness from fold_in(key, step). Metrics: w1_critic, gradient_penalty, gen_loss."""
  x_all, y_all = data
  b, nc = config.batch_size, config.n_critic
  gen_tx, critic_tx = _optimizers(config)
  k_batch, k_eta, k_steps, k_gbatch, k_geta = jax.random.split(
    jax.random.fold_in(key, state.step), 5
  )
  gen_params = state.params["generator"]
  # The generator is fixed while the critic trains: all fake images in one call.
  x, y = paired_data.constrain(
    paired_data.sample_batch(k_batch, x_all, y_all, (nc, b)), sharding, 1
  )
  eta = jax.random.normal(k_eta, (nc * b, config.noise_dim))
  fake = generator.apply({"params": gen_params}, eta, x.reshape(-1))
  batches = jax.lax.stop_gradient((x, y.reshape(nc, b, -1), fake.reshape(nc, b, -1)))

  def critic_loss(p, batch, k):
    xb, real, fake_b = batch
    f = wasserstein.critic_fn(critic, p["critic"], xb)
    return wasserstein.critic_loss(f, real, fake_b, k, config.gp_weight)

  cparams, copt, metrics, finite = wasserstein.critic_phase(
    critic_loss,
    critic_tx,
    {"critic": state.params["critic"]},
    {"critic": state.opt_state["critic"]},
    batches,
    k_steps,
    nc,
  )
  xg, _ = paired_data.constrain(paired_data.sample_batch(k_gbatch, x_all, y_all, (b,)), sharding)
  eta = jax.random.normal(k_geta, (b, config.noise_dim))
  f = wasserstein.critic_fn(critic, cparams["critic"], xg)

  def gen_loss_fn(gp):
    return wasserstein.generator_loss(f, generator.apply({"params": gp}, eta, xg).reshape(b, -1))

  gen_loss, grads = jax.value_and_grad(gen_loss_fn)(gen_params)
  gen_params, gen_opt = loop.apply_gradients(
    gen_tx, grads, state.opt_state["generator"], gen_params
  )
  finite = finite & loop.all_finite(gen_loss, grads)
  params = {"generator": gen_params, **cparams}
  state = loop.guarded_update(state, finite, params, {"generator": gen_opt, **copt})
  return state, {**metrics, "gen_loss": gen_loss}


@functools.partial(
  jax.jit,
  static_argnames=("generator", "critic", "config", "num_steps", "sharding"),
  donate_argnums=0,
)
def train_call(state, data, key, *, num_steps: int, **kw):
  """`num_steps` train steps in one `lax.scan`; the metrics' means over them."""
  step = functools.partial(train_step, **kw)
  state, metrics = jax.lax.scan(lambda s, _: step(s, data, key), state, None, length=num_steps)
  return state, jax.tree.map(jnp.mean, metrics)


def _generate(generator: PixelGenerator, params, x: jax.Array, key: jax.Array):
  eta = noise_per_row(key, x.shape[0], generator.noise_dim)
  return generator.apply({"params": params}, eta, x)


class PixelWGCS(paired_data.LabelGenerator):
  """A trained pixel-space generator (`module`: the `PixelGenerator`, `params`: its weights)."""

  @classmethod
  def fit(
    cls,
    x: jax.Array | np.ndarray,
    y: jax.Array | np.ndarray,
    *,
    num_classes: int,
    config: ml_collections.ConfigDict | None = None,
    seed: int = 0,
    mesh: Mesh | None = None,
  ) -> tuple[PixelWGCS, dict[str, np.ndarray]]:
    """Trains G and its critic on labels x (N,) and images y (N, H, W, C) (see
    `paired_data.check_paired`); `config`: the `pixel_wgcs` section (None: defaults); seed,
    mesh: see `paired_data.train_pairs`. Returns (the model, the training history)."""
    config = paired_data.settings("pixel_wgcs", config)
    x, y = paired_data.check_paired(x, y, num_classes)
    generator, critic = make_models(y.shape[1:], num_classes, config)
    step_config = paired_data.without_length(config)
    init = lambda k: init_state(generator, critic, step_config, jnp.asarray(y[:1]), k)  # noqa: E731
    kw = {"seed": seed, "mesh": mesh, "generator": generator, "critic": critic}
    state, history = paired_data.train_pairs(
      "pixel_wgcs", config, x, y, init, train_call, config=step_config, **kw
    )
    return cls(generator, state.params["generator"], _generate), history
