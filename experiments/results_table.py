"""Prints a markdown table of the metrics of finished runs (the README's tables).

    python -m experiments.results_table runs/mnist5k_classcond runs/mnist5k_sinkhorn
    python -m experiments.results_table --seeds=3 runs/a_s0 runs/a_s1 runs/a_s2 runs/b_s0 ...

Each argument is a workdir written by `experiments.main`; the row shows its estimator,
the test-split metrics of its `metrics.json` and the wall time of each stage.

With `--seeds=K`, every K consecutive workdirs are one setting at K seeds: a row per
setting, each cell the per-seed values, then their mean ± sample standard deviation. The
column *FD, unpaired reference* is read from `metrics_unpaired.json`
(`python -m experiments.evaluate --workdir=RUN --reference=unpaired`), '—' without it.
"""

import json
import os
import pathlib
import sys

from experiments.sweep_report import mean_std

COLUMNS = (
  ("accuracy", "accuracy", "{:.3f}"),
  ("fd_ratio", "FD ratio", "{:.2f}"),
  ("fd_pixels_ratio", "FD ratio (pixels)", "{:.2f}"),
  ("diversity_ratio", "diversity ratio", "{:.2f}"),
  ("precision", "precision", "{:.3f}"),
  ("recall", "recall", "{:.3f}"),
  ("recall_real", "recall (real)", "{:.3f}"),
)
TIMES = (
  ("stage1_seconds", "stage 1 s"),
  ("stage2_seconds", "stage 2 s"),
  ("total_seconds", "total s"),
)


def _read(path: pathlib.Path, fix: str) -> dict:
  try:
    return json.loads(path.read_text())
  except (OSError, ValueError) as e:
    raise SystemExit(f"error: cannot read {path} ({type(e).__name__}); {fix}") from None


def row(workdir: pathlib.Path) -> str:
  metrics = _read(workdir / "metrics.json", "finish the run with experiments.main first")
  config = _read(workdir / "config.json", "not a run")
  cells = [workdir.name, config["stage2"]["estimator"]]
  cells += [fmt.format(metrics[key]) for key, _, fmt in COLUMNS]
  cells += [f"{metrics['timings'][key]:.0f}" for key, _ in TIMES]
  return "| " + " | ".join(cells) + " |"


# --seeds=K: (label, metrics file, key, format) per column.
SEED_COLUMNS = (
  ("FD", "metrics.json", "fd", "{:.2f}"),
  ("FD, unpaired reference", "metrics_unpaired.json", "fd", "{:.2f}"),
  ("accuracy", "metrics.json", "accuracy", "{:.3f}"),
  ("precision", "metrics.json", "precision", "{:.3f}"),
  ("recall", "metrics.json", "recall", "{:.3f}"),
)


def _per_seed(values: list, fmt: str) -> str:
  if any(v is None for v in values):
    return "—"
  return " / ".join(fmt.format(v) for v in values) + " = " + mean_std(values, fmt)


def seed_row(workdirs: list[pathlib.Path]) -> str:
  """One setting at len(workdirs) seeds (see the module docstring)."""
  columns = {name: [] for name, *_ in SEED_COLUMNS}
  stage2 = []
  for wd in workdirs:
    metrics = _read(wd / "metrics.json", "finish the run with experiments.main first")
    unpaired = wd / "metrics_unpaired.json"
    files = {"metrics.json": metrics}
    if unpaired.exists():
      files[unpaired.name] = _read(unpaired, "rewrite it with experiments.evaluate")
    for name, file, key, _ in SEED_COLUMNS:
      columns[name].append(files[file][key] if file in files else None)
    stage2.append(metrics["timings"]["stage2_seconds"])
  names = [wd.name for wd in workdirs]
  cells = [names[0] if len(names) == 1 else os.path.commonprefix(names) + "*"]
  cells += [_per_seed(columns[name], fmt) for name, _, _, fmt in SEED_COLUMNS]
  cells += [mean_std(stage2, "{:.0f}")]
  return "| " + " | ".join(cells) + " |"


def main(argv: list[str]) -> None:
  args = argv[1:]
  seeds = 0
  if args and args[0].startswith("--seeds="):
    try:
      seeds = int(args.pop(0).removeprefix("--seeds="))
    except ValueError:
      seeds = -1
    if seeds < 1 or not args or len(args) % seeds:
      sys.exit(
        f"error: --seeds=K needs a whole number K >= 1 dividing the {len(args)} workdir(s) "
        "(K consecutive workdirs per setting)"
      )
  if not args:
    sys.exit("usage: python -m experiments.results_table [--seeds=K] WORKDIR [WORKDIR ...]")
  paths = [pathlib.Path(arg) for arg in args]
  if seeds:
    rows = [seed_row(paths[i : i + seeds]) for i in range(0, len(paths), seeds)]
    head = ["runs"] + [name for name, *_ in SEED_COLUMNS] + ["stage 2 s"]
  else:
    rows = [row(p) for p in paths]  # Every workdir read before printing.
    head = ["run", "estimator"] + [name for _, name, _ in COLUMNS] + [name for _, name in TIMES]
  print("| " + " | ".join(head) + " |")
  print("|" + "---|" * len(head))
  print("\n".join(rows))


if __name__ == "__main__":
  main(sys.argv)
