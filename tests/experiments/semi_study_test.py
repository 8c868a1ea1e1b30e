"""experiments.semi_study: the report's arithmetic, and the whole study at tiny sizes (slow)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from experiments import independent_classcond_eval as independent
from experiments import semi_study


def _rows(seed: int) -> dict:
  keys = [k for k, _, _ in semi_study.COLUMNS]
  names = ["paper", "semi", "semi_sinkhorn", "oracle"]
  names += [f"ld_{d}_ddim{n}" for d in ("paired", "pseudo") for n in semi_study.DDIM_STEPS]
  names += [f"cd_pseudo_{n}step" for n in semi_study.CD_STEPS]
  rows = {n: {k: 1.0 + seed for k in keys} for n in names}
  for i, n in enumerate(semi_study.DDIM_STEPS):  # LD: FD falls, time grows with steps.
    for d in ("paired", "pseudo"):
      rows[f"ld_{d}_ddim{n}"].update(fd=30.0 - 3 * i, seconds_per_1000=0.1 * n)
  rows["paper"].update(fd=24.0 + seed, seconds_per_1000=0.05)  # Mean 24.5: DDIM 50 (24).
  rows["semi"].update(fd=18.0, seconds_per_1000=0.05)  # Closest: DDIM 250 (18).
  rows["semi"].update(
    semi_labeller_accuracy_unpaired=0.9,
    semi_labeller_accuracy_kept=0.97,
    semi_coverage=0.8,
    semi_labeller_accuracy_test=0.91,
  )
  return rows


def test_report_means_stds_and_matched_fd_speed_ratio():
  text = semi_study.report({0: _rows(0), 1: _rows(1)})
  paper = next(line for line in text.splitlines() if line.startswith("| LSDM, paper"))
  assert "24.5 ± 0.7" in paper  # FD of seeds 0 and 1: 24, 25.
  assert paper.endswith("| 100.0x (DDIM 50) |")  # 0.1 * 50 / 0.05 = 100.
  semi = next(
    line for line in text.splitlines() if line.startswith("| LSDM, semi-supervised (`:semi`")
  )
  assert semi.endswith("| 500.0x (DDIM 250) |")
  assert "accuracy on the 3,500 unpaired images 0.900 ± 0.000" in text


def test_independent_scores_real_images_as_real():
  digits = independent.load_digits(independent.default_csv())
  pixels, labels = digits
  train = np.flatnonzero(np.arange(len(pixels)) % 5 != 4)
  train = np.random.default_rng(1).choice(train, 1000, replace=False)  # Rows are class-sorted.
  real = independent.score(pixels[train].reshape(-1, 28, 28, 1), labels[train], digits)
  assert real["accuracy"] > 0.9
  assert real["fd_ratio"] < 1.5
  noise = np.random.default_rng(0).uniform(size=(1000, 28, 28, 1))
  fake = independent.score(noise, labels[train], digits)
  assert fake["fd_ratio"] > 10 * real["fd_ratio"]
  assert fake["recall"] < 0.05


@pytest.mark.slow
def test_tiny_study_end_to_end(tmp_path):
  text = semi_study.run_study(tmp_path, [0], tiny=True)
  tables = [t.splitlines() for t in text.split("\n\n") if t.startswith("| ")]
  methods, labellers = tables[0], tables[1]
  # Header, separator, then one row per method.
  assert len(methods) - 2 == 4 + 2 * len(semi_study.DDIM_STEPS) + len(semi_study.CD_STEPS)
  assert [row.split(" | ")[0] for row in labellers[2:]] == ["| label_spreading", "| knn"]
  rows = json.loads((tmp_path / "semi_study.json").read_text())["0"]
  assert all(np.isfinite(r["fd"]) for r in rows.values())
  assert (tmp_path / "semi_grid.png").exists()
  again = semi_study.run_study(tmp_path, [0], tiny=True)  # Every part is skipped.
  assert again == text
