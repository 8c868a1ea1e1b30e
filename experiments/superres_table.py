"""Super-resolution table: LSDM against bicubic and a paired-only L2 regressor.

    python -m experiments.superres_table --workdir=runs/mnist5k_superres \
        [--extra=runs/mnist5k_superres_paired_only] [--regression_steps=2000]

Given a trained superres run (experiments.main with experiments/configs/
mnist5k_superres.py), trains the baselines on the *same* paired examples, scores them on
the same test inputs with the same `evaluate_superres`, and writes `superres_table.md`
(PSNR, SSIM, consistency, FD, precision, recall) to the workdir and to stdout. The LSDM
row is the run's metrics.json; each --extra workdir (for instance the same config with
--config.data.n_unpaired=0) adds a row from its metrics.json.
"""

from __future__ import annotations

import json
import pathlib

from absl import app, flags

from lsdm_jax import cli

FLAGS = flags.FLAGS


def _define_flags():
  """Flags are defined only when run as a script, so that tests may import the module."""
  flags.DEFINE_string("workdir", None, "A finished superres run of experiments.main.")
  flags.DEFINE_multi_string("extra", [], "Other superres workdirs to add as rows.")
  flags.DEFINE_integer("regression_steps", 2000, "Training steps of the L2 regressor.")
  flags.DEFINE_list(
    "projections", [], "Also rescore each LSDM run with these task.projection values."
  )
  flags.mark_flags_as_required(["workdir"])


COLUMNS = (
  ("psnr", "PSNR (dB) ↑"),
  ("ssim", "SSIM ↑"),
  ("consistency", "consistency (dB) ↑"),
  ("fd", "FD ↓"),
  ("precision", "precision ↑"),
  ("recall", "recall ↑"),
  ("spread", "spread (8 samples of one input)"),
  ("spread_real", "spread (8 nearest real)"),
)


def markdown_table(rows: dict[str, dict[str, float]]) -> str:
  """One row per method; missing metrics (no feature net) are '–'."""
  lines = [
    "| method | " + " | ".join(title for _, title in COLUMNS) + " |",
    "|---|" + "---:|" * len(COLUMNS),
  ]
  for name, metrics in rows.items():
    cells = []
    for key, _ in COLUMNS:
      v = metrics.get(key)
      cells.append(
        "–" if v is None else f"{v:.2f}" if key in ("psnr", "consistency") else f"{v:.3f}"
      )
    lines.append(f"| {name} | " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def _run_metrics(workdir: pathlib.Path) -> dict[str, float]:
  from lsdm_jax.errors import WorkdirError

  path = workdir / "metrics.json"
  if not path.exists():
    raise WorkdirError(f"{str(path)!r} does not exist: train the run first with experiments.main")
  metrics = json.loads(path.read_text())
  if "psnr" not in metrics:
    raise WorkdirError(f"{str(workdir)!r} is not an evaluated superres run (no psnr in metrics)")
  return metrics


def rescore_projected(workdir: pathlib.Path, amount: float) -> dict[str, float]:
  """The run's metrics with its samples moved `amount` towards consistency with their
  inputs (`task.projection`), without retraining: only generation changes."""
  import dataclasses

  import lsdm_jax
  from lsdm_jax import config as config_lib
  from lsdm_jax import train

  model = lsdm_jax.load(workdir)
  config = model.config.copy_and_resolve_references()
  config.task.projection = float(amount)
  config_lib.validate(config)
  model = dataclasses.replace(model, config=config)
  return train.evaluate(model, train.setup(config), config)


def make_table(
  workdir, extra=(), *, regression_steps: int = 2000, projections: tuple[float, ...] = ()
) -> str:
  """Builds, writes (`workdir/superres_table.md`) and returns the markdown table."""
  from lsdm_jax import train
  from lsdm_jax import workdir as workdir_lib
  from lsdm_jax.baselines import superres
  from lsdm_jax.data.sources import to_float
  from lsdm_jax.errors import ConfigError
  from lsdm_jax.metrics.classifier import load_or_train_classifier

  wd = pathlib.Path(workdir)
  config = workdir_lib.load_config(wd)
  if config.task.name != "superres":
    raise ConfigError(f"{str(wd)!r} is a {config.task.name!r} run; the table needs superres")
  lsdm = _run_metrics(wd)
  exp = train.setup(config)
  ds, task = exp.dataset, exp.task
  paired_y = to_float(ds.train_images[exp.split.paired])
  paired_x = exp.paired_conditions()
  _, test_x, test_y = train.superres_test_inputs(exp, config.eval.num_inputs)
  labelled = ds.train_labels is not None and ds.num_classes > 1
  net = load_or_train_classifier(ds) if labelled else None
  base = superres.evaluate_baselines(
    paired_x,
    paired_y,
    test_x,
    test_y,
    task.factor,
    net,
    steps=regression_steps,
    seed=config.seed,
  )
  n_p, n_u = len(exp.split.paired), len(exp.split.unpaired)
  for name in ("bicubic", "regression"):  # Deterministic: every sample of an input is one.
    base[name].update(spread=0.0, spread_real=lsdm.get("spread_real"))
  rows = {
    "bicubic": base["bicubic"],
    f"L2 regression ({n_p} paired)": base["regression"],
    f"LSDM ({n_p} paired, {n_u} unpaired)": lsdm,
  }
  for other in extra:
    other = pathlib.Path(other)
    c = workdir_lib.load_config(other)
    notes = [f"{c.data.n_paired} paired", f"{c.data.n_unpaired} unpaired"]
    if c.semi.enabled:
      notes.append("all trained as pairs (semi)")
    if c.stage2.consistency_weight > 0:
      notes.append(f"consistency loss {c.stage2.consistency_weight:g}")
    if c.task.projection > 0:
      notes.append(f"projection {c.task.projection:g}")
    rows[f"LSDM ({', '.join(notes)}; {other.name})"] = _run_metrics(other)
  for run in [wd, *map(pathlib.Path, extra)]:
    for amount in projections:
      rows[f"{run.name}, rescored at task.projection={float(amount):g}"] = rescore_projected(
        run, amount
      )
  header = (
    f"Super-resolution x{task.factor} on {ds.name}: {len(test_x)} test inputs, one sample "
    "each; FD/precision/recall in the domain feature net. Spread: mean RMS pixel distance "
    "between 8 samples of one input (first 200 test inputs), and between the 8 train images "
    "whose pooled versions are nearest to it (bicubic and L2 regression are deterministic).\n\n"
  )
  table = header + markdown_table(rows)
  (wd / "superres_table.md").write_text(table)
  (wd / "superres_baselines.json").write_text(json.dumps(base, indent=2, sort_keys=True))
  return table


def main(argv):
  if len(argv) > 1:
    cli.fail(f"unexpected arguments {argv[1:]}; every setting is a --flag")
  cli.quiet_library_logs()
  try:
    projections = tuple(float(p) for p in FLAGS.projections)
  except ValueError:
    cli.fail(f"--projections={','.join(FLAGS.projections)}: give numbers in [0, 1]")
  table = cli.run_guarded(
    make_table,
    FLAGS.workdir,
    FLAGS.extra,
    regression_steps=FLAGS.regression_steps,
    projections=projections,
  )
  print(table, end="")


if __name__ == "__main__":
  _define_flags()
  app.run(main, flags_parser=cli.parse_flags)
