"""Prints a markdown table of the metrics of finished runs (the README's tables).

    python -m experiments.results_table runs/mnist5k_classcond runs/mnist5k_sinkhorn

Each argument is a workdir written by `experiments.main`; the row shows its estimator,
the test-split metrics of its `metrics.json` and the wall time of each stage.
"""

import json
import pathlib
import sys

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


def main(argv: list[str]) -> None:
  if len(argv) < 2:
    sys.exit("usage: python -m experiments.results_table WORKDIR [WORKDIR ...]")
  rows = [row(pathlib.Path(arg)) for arg in argv[1:]]  # Every workdir read before printing.
  head = ["run", "estimator"] + [name for _, name, _ in COLUMNS] + [name for _, name in TIMES]
  print("| " + " | ".join(head) + " |")
  print("|" + "---|" * len(head))
  print("\n".join(rows))


if __name__ == "__main__":
  main(sys.argv)
