"""The semi-supervised study: the paper's stage 2 against the semi-supervised mode and peers.

    python -m experiments.semi_study --out=runs/semi_study            # 3 seeds
    python -m experiments.semi_study --out=runs/semi_study --seeds=0  # one seed

For each seed, on the default 500 paired / 3,500 unpaired split of MNIST-5k:

* `paper`: `mnist5k_classcond.py` (critic, the paper's method);
* `semi`, `semi_sinkhorn`: `mnist5k_classcond.py:semi` / `:semi_sinkhorn`, on the paper
  run's stage 1 and latents (copied; the same stage-1 config trains the same model);
* `oracle`: all 4,000 train images paired (`data.n_paired=4000 data.n_unpaired=0`);
* `ld_paired`, `ld_pseudo`: latent diffusion on the paper run's 500 paired latents, and on
  the semi run's pairs (500 true + the pseudo pairs), DDIM at `DDIM_STEPS`;
* `cd_pseudo`: consistency distillation of `ld_pseudo` (`lsdm_jax.baselines.consistency`),
  sampled in 1 and 2 steps.

Every row is scored twice on the test split: in this package's CNN features
(`lsdm_jax.metrics`) and in PCA pixel features (`experiments/independent_classcond_eval.py`,
which shares no code with the package), and timed in seconds per 1,000 decoded images.
`--ablations` adds seed 0's semi run with one choice changed at a time (`ABLATIONS`).
`OUT/labellers.png` compares the labellers on seed 0's latents: pseudo-label accuracy
against the share kept. Finished parts are skipped on a rerun. `OUT/semi_study.md` holds
the table (mean ± std over seeds) and the speed ratio of each one-step method against
latent diffusion at the DDIM step count whose mean FD is closest; `OUT/*_grid.png` are
seed 0's samples.
"""

from __future__ import annotations

import json
import pathlib
import statistics
import time

import numpy as np
from absl import app, flags, logging

from experiments import independent_classcond_eval as independent
from experiments.configs import mnist5k_classcond
from experiments.sweep_jobs import (
  _evaluation_inputs,
  _save_samples,
  _score,
  closest_step_count,
  copy_stage1,
  read_json,
  seconds_per_1000,
  write_json,
)
from experiments.sweep_report import mean_std
from lsdm_jax import cli

FLAGS = flags.FLAGS
DDIM_STEPS = (10, 20, 50, 100, 250)
CD_STEPS = (1, 2)
TIMING_REPEATS = 5
# --tiny: seconds per part, for tests of the study itself (not a result).
TINY = {
  "data.n_paired": 100,
  "data.n_unpaired": 300,
  "stage1.steps": 30,
  "stage1.save_every": 30,
  "stage2.steps": 40,
  "stage2.save_every": 40,
  "stage2.steps_per_call": 10,
  "eval.num_per_class": 20,
}
TINY_PEERS = {"diffusion": {"steps": 40, "steps_per_call": 20}, "consistency": {"steps": 20}}
LSDM_RUNS = {
  "paper": ("critic", {}),
  "semi": ("semi", {}),
  "semi_sinkhorn": ("semi_sinkhorn", {}),
  "oracle": ("critic", {"data.n_paired": 4000, "data.n_unpaired": 0}),
}
# --ablations: the semi run with one choice changed, on seed 0's stage 1.
ABLATIONS = {
  "semi_threshold0": {"semi.threshold": 0.0},
  "semi_threshold0.7": {"semi.threshold": 0.7},
  "semi_soft": {"semi.weighting": "soft"},
  "semi_knn": {"semi.labeller": "knn"},
  "semi_real_noise0.2": {"stage2.real_noise": 0.2},
}


def _define_flags():
  flags.DEFINE_string("out", None, "Directory of the study's runs and its report.")
  flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds (each a stage 1 of its own).")
  flags.DEFINE_bool("tiny", False, "Tiny models and steps: checks the study, measures nothing.")
  flags.DEFINE_bool("ablations", False, "Also the semi run's ablations (seed 0's stage 1).")
  flags.mark_flags_as_required(["out"])


def lsdm_config(name: str, seed: int, tiny: bool):
  if name in ABLATIONS:
    variant, fields = "semi", ABLATIONS[name]
  else:
    variant, fields = LSDM_RUNS[name]
  config = mnist5k_classcond.get_config(variant)
  config.lock()
  overrides = {**(TINY if tiny else {}), **fields, "seed": seed}
  if tiny and name == "oracle":
    overrides.update({"data.n_paired": 400, "data.n_unpaired": 0})
  config.update_from_flattened_dict(overrides)
  return config


class Scorer:
  """Scores and times images of the requested labels in both feature spaces."""

  def __init__(self, config):
    from lsdm_jax import train

    self.config = config
    self.exp = train.setup(config)
    # The requested labels, key and feature net of `train.evaluate`, as the sweep uses them.
    self.labels, self.key, self.net = _evaluation_inputs(config, self.exp)
    self.digits = independent.load_digits(independent.default_csv())

  def __call__(self, generate, grid: pathlib.Path | None) -> dict:
    seconds, images = seconds_per_1000(generate, len(self.labels), TIMING_REPEATS)
    images = np.asarray(images)
    ours = _score(images, self.labels, self.config, self.exp, self.net)
    theirs = independent.score(images, self.labels, self.digits)
    if grid is not None:
      _save_samples(images, self.config, self.exp, grid)
    return {
      **ours,
      **{f"pca_{k}": v for k, v in theirs.items()},
      "seconds_per_1000": seconds,
    }


def run_lsdm(out: pathlib.Path, name: str, seed: int, tiny: bool) -> pathlib.Path:
  from lsdm_jax import train
  from lsdm_jax import workdir as workdir_lib

  config = lsdm_config(name, seed, tiny)
  wd = out / f"{name}_s{seed}"
  source = out / f"paper_s{seed}"
  if name.startswith("semi") and not (wd / "stage1").exists():  # Also the ablations.
    train.setup(config)
    workdir_lib.prepare(wd, config)
    copy_stage1(source, wd)
  if not (wd / "metrics.json").exists():
    train.train_and_evaluate(config, wd)
  return wd


def score_lsdm(out, name, seed, tiny) -> dict:
  import lsdm_jax

  path = out / f"{name}_s{seed}" / "study.json"
  if (saved := read_json(path)) is not None:
    return saved
  wd = run_lsdm(out, name, seed, tiny)
  scorer = Scorer(lsdm_config(name, seed, tiny))
  model = lsdm_jax.load(wd)
  grid = out / f"{name}_grid.png" if seed == 0 else None
  row = scorer(lambda: np.asarray(model.generate(scorer.labels, scorer.key)), grid)
  metrics = read_json(wd / "metrics.json")
  row.update({k: v for k, v in metrics.items() if k.startswith("semi_")})
  row["train_seconds"] = metrics["timings"]["stage2_seconds"]
  write_json(path, {name: row})
  return {name: row}


def _pairs(out: pathlib.Path, seed: int, pseudo: bool):
  """(x, z) standardised training pairs: the paper run's, or the semi run's with pseudo pairs."""
  from lsdm_jax import latents, parallel

  arrays, _ = latents.load(out / f"paper_s{seed}" / "latents", parallel.make_mesh(1, 1))
  mean, std = arrays["mean"], arrays["std"]
  x = np.asarray(arrays["x"])
  z = np.asarray(latents.standardise(arrays["z"], mean, std))
  if pseudo:
    labels = np.load(out / f"semi_s{seed}" / "semi_labels.npz", allow_pickle=False)
    z_u = np.asarray(latents.standardise(arrays["z_unpaired"], mean, std))
    x = np.concatenate([x, labels["labels"]])
    z = np.concatenate([z, z_u[labels["unpaired_index"]]])
  return x.astype(np.int32), z, mean, std


def score_peers(out, seed, tiny) -> dict:
  """Latent diffusion (paired, pseudo-labelled) and the consistency peer, on one seed."""
  import jax.numpy as jnp

  import lsdm_jax
  from lsdm_jax import latents
  from lsdm_jax.baselines.consistency import ConsistencyConfig, ConsistencyModel
  from lsdm_jax.baselines.latent_diffusion import DiffusionConfig, LatentDiffusion

  path = out / f"peers_s{seed}.json"
  if (saved := read_json(path)) is not None:
    return saved
  scorer = Scorer(lsdm_config("paper", seed, tiny))
  lsdm = lsdm_jax.load(out / f"paper_s{seed}")
  peers = TINY_PEERS if tiny else {"diffusion": {}, "consistency": {}}
  x_eval = jnp.asarray(scorer.labels)
  rows = {}
  for name, pseudo in (("ld_paired", False), ("ld_pseudo", True)):
    x, z, mean, std = _pairs(out, seed, pseudo)
    t = time.perf_counter()
    ldm, _ = LatentDiffusion.fit(
      x,
      z,
      cond_kind="label",
      num_classes=10,
      config=DiffusionConfig(**peers["diffusion"]),
      seed=seed,
    )
    train_seconds = time.perf_counter() - t

    def decode(zs, mean=mean, std=std):
      return np.asarray(lsdm.decode(latents.unstandardise(zs, mean, std)))

    for n in DDIM_STEPS:
      grid = out / f"{name}_ddim{n}_grid.png" if seed == 0 else None
      row = scorer(lambda n=n, m=ldm: decode(m.sample(x_eval, scorer.key, num_steps=n)), grid)
      rows[f"{name}_ddim{n}"] = {**row, "train_seconds": train_seconds}
    if pseudo:
      t = time.perf_counter()
      cm, _ = ConsistencyModel.distill(
        ldm, x, z, config=ConsistencyConfig(**peers["consistency"]), seed=seed
      )
      cd_seconds = time.perf_counter() - t + train_seconds  # Teacher included.
      for n in CD_STEPS:
        grid = out / f"cd_pseudo_{n}step_grid.png" if seed == 0 else None
        row = scorer(lambda n=n, m=cm: decode(m.sample(x_eval, scorer.key, num_steps=n)), grid)
        rows[f"cd_pseudo_{n}step"] = {**row, "train_seconds": cd_seconds}
  write_json(path, rows)
  return rows


def labeller_curves(out: pathlib.Path, seed: int, tiny: bool) -> str:
  """Accuracy of the pseudo-labels kept against the share kept, for both labellers, on the
  paper run's latents (true labels of the unpaired images read for this diagnostic only);
  writes OUT/labellers.png and returns a markdown table."""
  import matplotlib

  matplotlib.use("Agg")
  from matplotlib import pyplot as plt

  from lsdm_jax import latents, parallel, semi, train

  config = lsdm_config("semi", seed, tiny)
  exp = train.setup(config)
  arrays, _ = latents.load(out / f"paper_s{seed}" / "latents", parallel.make_mesh(1, 1))
  mean, std = arrays["mean"], arrays["std"]
  z = np.asarray(latents.standardise(arrays["z"], mean, std))
  z_u = np.asarray(latents.standardise(arrays["z_unpaired"], mean, std))[: len(exp.split.unpaired)]
  x, truth = np.asarray(arrays["x"]), exp.dataset.train_labels[exp.split.unpaired]
  lines = ["| labeller | accuracy (all) | " + " | ".join(f"t={t}" for t in (0.5, 0.7, 0.9)) + " |"]
  lines.append("|---|---|---|---|---|")
  fig, ax = plt.subplots(figsize=(5, 3.5))
  for name in semi.LABELLERS:
    cfg = config.semi.copy_and_resolve_references()
    cfg.labeller = name
    probs = np.asarray(semi.class_probabilities(cfg, z, x, z_u, exp.task.num_classes))
    pred, conf = probs.argmax(1), probs.max(1)
    order = np.argsort(-conf)
    hits = np.cumsum(pred[order] == truth[order])
    share = np.arange(1, len(order) + 1) / len(order)
    ax.plot(share, hits / np.arange(1, len(order) + 1), label=name)
    cells = []
    for t in (0.5, 0.7, 0.9):
      kept = conf >= t
      acc = np.mean(pred[kept] == truth[kept]) if kept.any() else float("nan")
      cells.append(f"{acc:.3f} ({kept.mean():.2f} kept)")
    lines.append(f"| {name} | {np.mean(pred == truth):.3f} | " + " | ".join(cells) + " |")
  ax.set_xlabel("share of unpaired latents kept (most confident first)")
  ax.set_ylabel("pseudo-label accuracy")
  ax.grid(alpha=0.3)
  ax.legend()
  fig.tight_layout()
  fig.savefig(out / "labellers.png", dpi=120)
  plt.close(fig)
  return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- report

COLUMNS = (
  ("fd", "FD", "{:.1f}"),
  ("fd_ratio", "FD ratio", "{:.2f}"),
  ("accuracy", "accuracy", "{:.3f}"),
  ("precision", "precision", "{:.3f}"),
  ("recall", "recall", "{:.3f}"),
  ("pca_fd_ratio", "PCA FD ratio", "{:.2f}"),
  ("pca_accuracy", "PCA accuracy", "{:.3f}"),
  ("pca_recall", "PCA recall", "{:.3f}"),
  ("seconds_per_1000", "s / 1,000 images", "{:.3f}"),
  ("train_seconds", "train s", "{:.0f}"),
)
LABELS = {
  "paper": "LSDM, paper's stage 2 (critic; default)",
  "semi": "LSDM, semi-supervised (`:semi`, critic)",
  "semi_sinkhorn": "LSDM, semi-supervised (`:semi_sinkhorn`)",
  "oracle": "LSDM, 4,000 true pairs (oracle)",
  "cd_pseudo_1step": "consistency distillation of LD (pseudo), 1 step",
  "cd_pseudo_2step": "consistency distillation of LD (pseudo), 2 steps",
}
# One-step method -> the latent diffusion it is compared with (same training pairs).
SPEED_REFERENCE = {
  "paper": "ld_paired",
  "oracle": "ld_paired",
  "semi": "ld_pseudo",
  "semi_sinkhorn": "ld_pseudo",
  "cd_pseudo_1step": "ld_pseudo",
  "cd_pseudo_2step": "ld_pseudo",
}


def _label(name: str) -> str:
  if name.startswith("ld_"):
    kind, steps = name.rsplit("_ddim", 1)
    data = "500 paired" if kind == "ld_paired" else "pseudo-labelled"
    return f"latent diffusion ({data}), DDIM {steps}"
  return LABELS[name]


def report(rows_by_seed: dict[int, dict]) -> str:
  seeds = sorted(rows_by_seed)
  names = list(rows_by_seed[seeds[0]])
  mean = {
    n: {k: statistics.mean(rows_by_seed[s][n][k] for s in seeds) for k, _, _ in COLUMNS}
    for n in names
  }
  head = "| method | " + " | ".join(c[1] for c in COLUMNS) + " | speed vs LD at matched FD |"
  lines = [head, "|" + "---|" * (len(COLUMNS) + 2)]
  for n in names:
    cells = [mean_std([rows_by_seed[s][n][k] for s in seeds], fmt) for k, _, fmt in COLUMNS]
    speed = ""
    if n in SPEED_REFERENCE:
      ref = SPEED_REFERENCE[n]
      fds = {steps: mean[f"{ref}_ddim{steps}"]["fd"] for steps in DDIM_STEPS}
      steps = closest_step_count(fds, mean[n]["fd"])
      ratio = mean[f"{ref}_ddim{steps}"]["seconds_per_1000"] / mean[n]["seconds_per_1000"]
      speed = f"{ratio:.1f}x (DDIM {steps})"
    lines.append(f"| {_label(n)} | " + " | ".join(cells) + f" | {speed} |")
  semi = [rows_by_seed[s]["semi"] for s in seeds]
  labeller = (
    "Labeller (label spreading on the semi runs' latents): accuracy on the 3,500 unpaired "
    f"images {mean_std([r['semi_labeller_accuracy_unpaired'] for r in semi], '{:.3f}')}, on the "
    f"pseudo pairs kept {mean_std([r['semi_labeller_accuracy_kept'] for r in semi], '{:.3f}')} "
    f"(coverage {mean_std([r['semi_coverage'] for r in semi], '{:.2f}')}), on the test split "
    f"{mean_std([r['semi_labeller_accuracy_test'] for r in semi], '{:.3f}')}."
  )
  title = f"Seeds {', '.join(map(str, seeds))}; mean ± sample std over seeds."
  return "\n".join([title, "", *lines, "", labeller, ""])


def ablation_report(rows: dict) -> str:
  head = "| semi run (seed 0) | " + " | ".join(c[1] for c in COLUMNS[:8]) + " | pseudo pairs |"
  lines = [head, "|" + "---|" * 10]
  for name, row in rows.items():
    cells = [fmt.format(row[k]) for k, _, fmt in COLUMNS[:8]]
    label = (
      "`:semi` (default)"
      if name == "semi"
      else ", ".join(f"`{k}={v}`" for k, v in ABLATIONS[name].items())
    )
    lines.append(f"| {label} | " + " | ".join(cells) + f" | {row['semi_pseudo_pairs']:.0f} |")
  return "\n".join(lines) + "\n"


def run_study(out: pathlib.Path, seeds: list[int], tiny: bool, ablations: bool = False) -> str:
  out.mkdir(parents=True, exist_ok=True)
  rows_by_seed = {}
  for seed in seeds:
    rows = {}
    for name in LSDM_RUNS:
      t = time.perf_counter()
      rows.update(score_lsdm(out, name, seed, tiny))
      logging.info("study: %s seed %d done (%.0f s)", name, seed, time.perf_counter() - t)
    rows.update(score_peers(out, seed, tiny))
    order = ["paper", "semi", "semi_sinkhorn", "oracle"]
    order += [f"ld_{d}_ddim{n}" for d in ("paired", "pseudo") for n in DDIM_STEPS]
    order += [f"cd_pseudo_{n}step" for n in CD_STEPS]
    rows_by_seed[seed] = {n: rows[n] for n in order}
  text = report(rows_by_seed)
  text += "\n" + labeller_curves(out, seeds[0], tiny)
  if ablations:
    rows = {"semi": rows_by_seed[seeds[0]]["semi"]}
    for name in ABLATIONS:
      rows.update(score_lsdm(out, name, seeds[0], tiny))
    text += "\n" + ablation_report(rows)
  (out / "semi_study.md").write_text(text)
  (out / "semi_study.json").write_text(json.dumps(rows_by_seed, indent=2, sort_keys=True))
  return text


def main(argv):
  if len(argv) > 1:
    cli.fail(f"unexpected arguments {argv[1:]}; every setting is a --flag")
  cli.quiet_library_logs()
  seeds = [int(s) for s in FLAGS.seeds]
  print(cli.run_guarded(run_study, pathlib.Path(FLAGS.out), seeds, FLAGS.tiny, FLAGS.ablations))


if __name__ == "__main__":
  _define_flags()
  app.run(main, flags_parser=cli.parse_flags)
