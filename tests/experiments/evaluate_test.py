"""`python -m experiments.evaluate`: rescoring a finished run, on the test split or on its
unpaired images, without touching the other metrics file."""

import json
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest

from experiments import evaluate

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture
def run_copy(tiny_run, tmp_path):
  config, workdir, metrics = tiny_run
  copy = tmp_path / "run"
  shutil.copytree(workdir, copy)
  return config, copy, metrics


def test_rescoring_on_the_test_split_gives_the_run_s_metrics(run_copy):
  _, workdir, metrics = run_copy
  again = evaluate.evaluate_run(workdir)
  for key in ("fd", "accuracy", "precision", "recall", "bound_value"):
    assert again[key] == pytest.approx(metrics[key], rel=1e-5), key
  assert json.loads((workdir / "metrics.json").read_text())["fd"] == again["fd"]


def test_unpaired_reference_writes_its_own_file_and_leaves_the_test_metrics(run_copy):
  config, workdir, metrics = run_copy
  before = (workdir / "metrics.json").read_bytes()
  out = evaluate.evaluate_run(workdir, reference="unpaired")
  assert (workdir / "metrics.json").read_bytes() == before
  assert json.loads((workdir / "metrics_unpaired.json").read_text()) == out
  # Same samples, so the same accuracy; another reference, so another FD; no bound terms.
  assert out["accuracy"] == pytest.approx(metrics["accuracy"], rel=1e-6)
  assert out["fd"] != pytest.approx(metrics["fd"], rel=1e-3)
  assert np.isfinite(out["fd_real"]) and out["fd_real"] > 0
  assert not any(k.startswith("bound_") for k in out)


def test_bad_reference_is_one_line_and_exit_2(tmp_path):
  r = subprocess.run(
    [sys.executable, "-m", "experiments.evaluate", f"--workdir={tmp_path}", "--reference=val"],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=120,
    env={"JAX_PLATFORMS": "cpu", "PATH": "/usr/bin:/bin"},
  )
  assert r.returncode == 2 and r.stderr.strip().startswith("error:"), r.stderr
  assert "reference" in r.stderr and "Traceback" not in r.stderr
  assert list(tmp_path.iterdir()) == []
