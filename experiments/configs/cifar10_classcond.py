"""Class-conditional CIFAR-10 (TFDS `cifar10`): 4,000 paired and 46,000 unpaired images.

    tfds build cifar10 --file_format=array_record --data_dir=DIR   # once, with network
    python -m experiments.main --config=experiments/configs/cifar10_classcond.py \
        --config.data.data_dir=DIR --workdir=runs/cifar10_classcond

The research tier of the same pipeline as the MNIST configs, sized for one GPU or TPU
host (`benchmarks/scale.py` gives its FLOPs and memory). 4,000 labels (400 per class) is
the usual semi-supervised CIFAR-10 setting; the other 46,000 train images are unpaired.
Without the prepared data the run stops at once with one line saying how to prepare it.

Stage 1 is latent diffusion's KL-f4 autoencoder as published (Rombach et al. 2022,
`models/first_stage_models/kl-f4/config.yaml` and `LPIPSWithDiscriminator`): ch 128,
ch_mult (1, 2, 4), 2 residual blocks, attention in the middle, z_channels 3 (a 32x32x3 →
8x8x3 latent), L1 on [−1, 1] images plus LPIPS (VGG) at weight 1, KL weight 1e-6, the
PatchGAN hinge loss from step 50,001 at the adaptive weight 0.5 · ‖∇ nll‖ / ‖∇ adv‖ (at
the decoder's last layer), Adam (0.5, 0.9) at a constant 4.5e-6 × the global batch for
the autoencoder and, on its own, for the discriminator (the rate resolved from the batch
when the run starts: `lr_scaling='linear'`). The LPIPS weights are a file made once where
torch and lpips are installed (`lsdm_jax/metrics/lpips.py`; without it the run stops at
once with the one-line command; `--config.stage1.perceptual_weight=0` trains without).
Ours: the decoder's sigmoid output and the discriminator's GroupNorm (theirs: unbounded
output, BatchNorm). Stage 2 is the conv FiLM generator and projection critic on the
8x8x3 latent, with WGAN-GP's CIFAR-10 recipe (Gulrajani et al. 2017: Adam 2e-4, β = (0,
0.9), both rates decayed linearly to 0 over the run, 5 critic updates per generator
update, penalty weight 10). bfloat16 compute; on a CPU pass --config.compute_dtype=float32.
With `--config.eval.inception_weights=FILE` the evaluation adds FID as papers report it:
50,000 samples (5,000 per class) against the statistics of all 50,000 train images,
beside the 10,000 test images' FID against them (docs/research.md).

The argument after ':' picks the variant: `default`, or `tiny` (a few steps of every
stage at toy sizes, for the tests on TFDS mock data).
"""

from lsdm_jax.config import base_config
from lsdm_jax.errors import ConfigError

VARIANTS = ("default", "tiny")


def get_config(variant: str = "default"):
  if variant not in VARIANTS:
    raise ConfigError(f"unknown variant {variant!r} after ':' in --config; use one of {VARIANTS}")
  config = base_config()
  config.data.source = "tfds:cifar10"
  config.data.n_paired = 4000
  config.data.n_unpaired = 46_000
  config.task.name = "classcond"
  config.compute_dtype = "bfloat16"
  kl_f4_autoencoder(config, batch_size=128, steps=100_000)  # 256 epochs of 50,000 images.
  wgan_gp_conv_stage2(config)  # Critic 8x8 → 4x4 → 2x2.
  config.eval.num_per_class = 1000  # 10,000 samples for the domain classifier's metrics.
  config.eval.num_samples = 50_000  # The FID protocol's count (with eval.inception_weights).
  if variant == "tiny":
    shrink(config)
  return config


def kl_f4_autoencoder(config, *, batch_size: int, steps: int):
  """Latent diffusion's KL-f4 recipe (see the module docstring) at `batch_size`."""
  s1 = config.stage1
  s1.arch = "resnet"
  s1.ch, s1.ch_mult, s1.num_res_blocks, s1.z_channels = 128, (1, 2, 4), 2, 3
  s1.loss, s1.regularizer, s1.reg_weight = "l1", "kl", 1e-6
  s1.perceptual_weight = 1.0
  s1.disc_weight, s1.disc_start = 0.5, 50_001
  s1.batch_size = batch_size
  # Adam (0.5, 0.9) at a constant base rate × batch; no warm-up, decay or clipping.
  s1.lr_scaling, s1.base_learning_rate, s1.learning_rate = "linear", 4.5e-6, 0.0
  s1.schedule, s1.warmup_steps, s1.grad_clip, s1.weight_decay = "constant", 0, 0.0, 0.0
  s1.b1, s1.b2 = 0.5, 0.9
  s1.steps = steps
  s1.log_every, s1.save_every = 500, 5000


def wgan_gp_conv_stage2(config):
  """The conv FiLM generator and projection critic with WGAN-GP's CIFAR-10 recipe."""
  s2 = config.stage2
  s2.arch = "conv"
  s2.channels, s2.num_blocks, s2.noise_dim, s2.cond_features = 256, 6, 128, 256
  s2.critic_channels = (128, 256, 512)  # Every stage after the first halves the grid.
  s2.learning_rate = s2.critic_learning_rate = 2e-4
  s2.schedule, s2.final_lr_scale = "linear", 0.0  # Decayed to 0 over the run.
  s2.b1, s2.b2 = 0.0, 0.9
  s2.gp_stride = 1
  s2.real_noise = 0.1  # Hundreds of latents per condition: a little jitter.
  s2.batch_size = 256
  s2.steps = 100_000
  s2.log_every, s2.save_every = 500, 5000


def shrink(config):
  """Toy sizes of the same architecture, for tests on TFDS mock data (40 images a split)."""
  config.compute_dtype = "float32"
  config.data.n_paired, config.data.n_unpaired = 20, 16
  s1 = config.stage1
  s1.ch, s1.ch_mult, s1.num_res_blocks, s1.z_channels = 8, (1, 2), 1, 2
  s1.disc_features, s1.disc_layers, s1.disc_start = 8, 2, 2
  s1.batch_size, s1.steps, s1.log_every, s1.save_every = 8, 4, 2, 2
  s1.perceptual_weight = 0.0  # The tests exercise LPIPS with random weights of their own.
  s2 = config.stage2
  s2.channels, s2.num_blocks, s2.noise_dim, s2.cond_features = 8, 1, 4, 8
  s2.critic_channels, s2.n_critic = (8, 8), 1
  s2.batch_size, s2.steps, s2.steps_per_call, s2.log_every, s2.save_every = 8, 4, 2, 2, 2
  config.eval.num_per_class, config.eval.grid_per_class, config.eval.num_inputs = 2, 2, 8
  config.eval.num_samples = 8
