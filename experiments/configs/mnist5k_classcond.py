"""Class-conditional MNIST on the embedded 5,000 digits: 500 paired, 3,500 unpaired.

    python -m experiments.main --config=experiments/configs/mnist5k_classcond.py \
        --workdir=runs/mnist5k_classcond

The argument after ':' picks the variant: `critic` (the default, the paper's method),
`sinkhorn` (OTT-JAX's Sinkhorn divergence as the W1 estimator), and `semi` /
`semi_sinkhorn`, the semi-supervised stage 2 (`lsdm_jax.semi`, an extension): the 3,500
unpaired latents get labels from label spreading over the paired labels and join the 500
true pairs (docs/semi_supervised.md). `resnet` swaps stage 1 for the ResNet autoencoder
with a spatial 7x7x1 latent (`stage1.arch='resnet'`, the architecture of the CIFAR-10 and
CelebA configs, scaled down; stage 2 keeps its MLP networks on the flat 49-d codes).

Studies (`python -m experiments.study --config=THIS --study=NAME --out=DIR`):
`unpaired` (paired x unpaired x seeds x estimators, marginal matching, the baselines),
`quick` (a smaller `unpaired`), `semi` and `semi_ablations` (docs/semi_supervised.md),
`seeds` (stage-2 settings over stage-2 seeds on one stage 1), `steps` (stage-2 length),
`long` (LSDM and latent diffusion both trained longer), `resnet` (the paper's method with
each autoencoder and stage-2 architecture, docs/results.md).
"""

from lsdm_jax.config import base_config
from lsdm_jax.errors import ConfigError

VARIANTS = ("critic", "sinkhorn", "semi", "semi_sinkhorn", "resnet")
DDIM_STEPS = (10, 20, 50, 100, 250)


def get_config(variant: str = "critic"):
  if variant not in VARIANTS:
    raise ConfigError(f"unknown variant {variant!r} after ':' in --config; use one of {VARIANTS}")
  semi = variant.startswith("semi")
  config = base_config()
  config.data.source = "mnist5k"
  config.data.n_paired = 500
  config.data.n_unpaired = 3500
  config.task.name = "classcond"
  config.semi.enabled = semi
  s = config.stage2
  if semi:
    s.steps = 12000  # About seven times the pairs of the paper's setting.
    s.real_noise = 0.0  # Jitter widens scarce pairs; with pseudo pairs it blurs.
  if variant == "resnet":
    r = config.stage1
    r.arch = "resnet"
    r.ch, r.ch_mult, r.num_res_blocks = 16, (1, 2, 2), 1  # 28x28 → 7x7 (two halvings).
    r.z_channels = 1  # A 49-d latent; the default's is 16-d.
    r.batch_size = 64  # Full-resolution convolutions cost 2 CPU cores ~0.4 s per step.
    r.steps = 2500
    r.learning_rate = 1e-3
  if variant.endswith("sinkhorn"):
    s.estimator = "sinkhorn"
    s.learning_rate = 3e-4  # The divergence's gradients are smaller than a critic's.
    s.real_noise = 0.0  # The entropic blur (epsilon) already smooths the target.
    if not semi:
      s.steps = 8000
  return config


def unpaired_grid(
  add,
  *,
  n_paired,
  n_unpaired,
  seeds,
  estimators=("critic", "sinkhorn"),
  extension=(),
  baselines=(),
  ddim_steps=DDIM_STEPS,
  fields=None,
  estimator_fields=None,
  timing_repeats=3,
):
  """LSDM at every n_paired x n_unpaired x seed x estimator (`seed` and `data.split_seed`
  both the seed); the marginal-matching term (`stage2.unpaired_weight=0.5`) for each
  (estimator, n_paired) of `extension` at n_unpaired > 0, compared with the paper's run;
  and at each n_paired of `baselines`, latent diffusion in the latent space of the
  critic run with the most unpaired images, the pixel-space WGCS and the CVAE."""
  fields, estimator_fields = fields or {}, estimator_fields or {}
  for p in n_paired:
    for u in n_unpaired:
      for seed in seeds:
        for est in estimators:
          for w in (0.0, 0.5):
            if w and ((est, p) not in extension or u == 0):
              continue
            add(
              f"lsdm_{est}_p{p}_u{u}_w{w:g}",
              seed,
              variant=est,
              compare=f"lsdm_{est}_p{p}_u{u}_w0" if w else None,
              **{"seed": seed, "data.split_seed": seed, "data.n_paired": p},
              **{"data.n_unpaired": u, "stage2.unpaired_weight": w},
              **fields,
              **estimator_fields.get(est, {}),
            )
  for p in baselines:
    for seed in seeds:
      ref = f"lsdm_critic_p{p}_u{max(n_unpaired)}_w0_s{seed}"
      add(f"latent_diffusion_p{p}", seed, "latent_diffusion", reference=ref,
          ddim_steps=ddim_steps, timing_repeats=timing_repeats, **fields)  # fmt: skip
      for kind in ("pixel_wgcs", "cvae"):
        add(f"{kind}_p{p}", seed, kind, reference=ref, timing_repeats=timing_repeats, **fields)


SEMI_ABLATIONS = {
  "threshold0": {"semi.threshold": 0.0},
  "threshold0.7": {"semi.threshold": 0.7},
  "soft": {"semi.weighting": "soft"},
  "knn": {"semi.labeller": "knn"},
  "real_noise0.2": {"stage2.real_noise": 0.2},
}


def semi_grid(add, seeds=(0, 1, 2), fields=None, oracle_paired=4000, distill_steps=(1, 2)):
  """The paper's stage 2 against the semi-supervised mode, the oracle (every train image
  paired) and latent diffusion on the true and the pseudo pairs (with its consistency
  distillation), on each seed's one stage 1; the labellers on the first seed's latents."""
  common = {"timing_repeats": 5, **(fields or {})}
  for seed in seeds:
    for name in ("paper", "semi", "semi_sinkhorn"):
      semi = name != "paper"
      add(name, seed, variant=name if semi else "critic", compare="paper" if semi else None,
          seed=seed, **common)  # fmt: skip
    add(
      "oracle", seed, seed=seed, **{**common, "data.n_paired": oracle_paired, "data.n_unpaired": 0}
    )
    ld = {"ddim_steps": DDIM_STEPS, **common}
    add("ld_paired", seed, "latent_diffusion", reference=f"paper_s{seed}", **ld)
    add("ld_pseudo", seed, "latent_diffusion", reference=f"semi_s{seed}", pairs="pseudo",
        distill_steps=distill_steps, **ld)  # fmt: skip
  add("labellers", seeds[0], "labellers", reference=f"paper_s{seeds[0]}", **(fields or {}))


def sweep(add, study: str):
  """The studies of this config (see the module docstring)."""
  if study == "unpaired":
    unpaired_grid(
      add,
      n_paired=(100, 500),
      n_unpaired=(0, 500, 1500, 3500),
      seeds=(0, 1, 2),
      extension=(("critic", 100), ("critic", 500), ("sinkhorn", 100), ("sinkhorn", 500)),
      baselines=(500, 100),
    )
  elif study == "quick":
    unpaired_grid(
      add,
      n_paired=(500,),
      n_unpaired=(0, 3500),
      seeds=(0, 1),
      extension=(("critic", 500),),
      baselines=(500,),
      fields={
        "stage1.steps": 800,
        "latent_diffusion.steps": 500,
        "pixel_wgcs.steps": 500,
        "cvae.steps": 1000,
      },
      estimator_fields={"critic": {"stage2.steps": 1200}, "sinkhorn": {"stage2.steps": 800}},
    )
  elif study == "long":
    unpaired_grid(
      add,
      n_paired=(500,),
      n_unpaired=(3500,),
      seeds=(0, 1, 2),
      estimators=("critic",),
      baselines=(500,),
      fields={"stage2.steps": 20000, "latent_diffusion.steps": 4000},
    )
  elif study == "semi":
    semi_grid(add)
  elif study == "resnet":
    add("paper", 0)
    add("resnet", 0, variant="resnet", compare="paper")
  elif study == "semi_ablations":
    add("paper", 0)
    add("semi", 0, variant="semi", compare="paper")
    for name, fields in SEMI_ABLATIONS.items():
      add(f"semi_{name}", 0, variant="semi", compare="semi", **fields)
  elif study == "seeds":
    settings = {
      "default": {},
      "gp_stride1": {"stage2.gp_stride": 1},
      "gp_stride1_ema0": {"stage2.gp_stride": 1, "stage2.ema_decay": 0.0},
      "ema0": {"stage2.ema_decay": 0.0},
      "gp_stride4_ema0": {"stage2.gp_stride": 4, "stage2.ema_decay": 0.0},
      "steps12000": {"stage2.steps": 12000},
    }
    for name, fields in settings.items():
      for seed in (0, 1, 2):  # Stage 2's seed; one stage 1 (seed 0) for all.
        add(
          name, seed, compare="default", unpaired_reference=True, **{"stage2.seed": seed, **fields}
        )
  elif study == "steps":
    for steps in (6000, 12000, 20000):
      for seed in (0, 1, 2):
        add(
          f"steps{steps}",
          seed,
          compare="steps6000",
          unpaired_reference=True,
          **{"seed": seed, "data.split_seed": seed, "stage2.steps": steps},
        )
  else:
    studies = ("unpaired", "quick", "long", "semi", "semi_ablations", "seeds", "steps", "resnet")
    raise ConfigError(f"unknown study {study!r}; use one of {studies}")
