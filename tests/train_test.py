"""End to end on the tiny config: both stages train, generate, evaluate, resume, reload."""

import json
import shutil

import jax
import numpy as np
import pytest

import lsdm_jax
from experiments.configs import test as test_config
from lsdm_jax import train
from lsdm_jax.errors import WorkdirError


@pytest.fixture
def run(tiny_run):
  """The session's tiny run (tests/conftest.py), trained once with its metrics."""
  return tiny_run


def test_pipeline_writes_every_artefact(run):
  _, workdir, metrics = run
  for name in (
    "config.json",
    "metrics.json",
    "samples/grid.png",
    "samples/reconstructions.png",
    "curves/stage1.png",
    "curves/stage2.png",
  ):
    assert (workdir / name).exists(), name
  for stage in ("stage1", "stage2"):
    assert any(p.name.isdigit() for p in (workdir / stage).iterdir())
  saved = json.loads((workdir / "metrics.json").read_text())
  assert 0.0 <= saved["accuracy"] <= 1.0 and np.isfinite(saved["fd"])
  bound = {k: v for k, v in saved.items() if k.startswith("bound_")}
  assert all(np.isfinite(v) for v in bound.values()) and bound["bound_lipschitz"] > 0
  assert bound["bound_value"] == pytest.approx(
    bound["bound_reconstruction"] + max(1.0, bound["bound_lipschitz"]) * bound["bound_latent_w1"]
  )
  assert saved == json.loads(json.dumps(metrics))


def test_load_generates_the_requested_shape_deterministically(run):
  _, workdir, _ = run
  model = lsdm_jax.load(workdir)
  a = model.generate(np.arange(10), jax.random.key(0), n=3)
  assert a.shape == (30, 28, 28, 1) and a.dtype == np.float32
  np.testing.assert_array_equal(a, model.generate(np.arange(10), jax.random.key(0), n=3))
  z = model.encode(a[:4])
  assert z.shape == (4, 8) and model.decode(z).shape == (4, 28, 28, 1)


def test_rerun_skips_finished_stages_and_refuses_another_config(run, tmp_path):
  config, shared, _ = run
  workdir = shutil.copytree(shared, tmp_path / "run")  # The shared run stays as trained.
  before = {p: p.stat().st_mtime_ns for p in (workdir / "stage1").rglob("*") if p.is_file()}
  train.train_and_evaluate(config, workdir)
  after = {p: p.stat().st_mtime_ns for p in (workdir / "stage1").rglob("*") if p.is_file()}
  assert before == after  # Nothing retrained or rewritten.
  other = test_config.get_config()
  other.stage2.steps = 40
  with pytest.raises(WorkdirError, match="stage2.steps"):
    train.train_and_evaluate(other, workdir)
  assert json.loads((workdir / "config.json").read_text())["stage2"]["steps"] == config.stage2.steps


@pytest.mark.slow  # The Sinkhorn step: tests/stage2_test.py (learning), parallel_test (meshes).
def test_sinkhorn_estimator_runs_end_to_end(tmp_path):
  config = test_config.get_config()
  config.stage2.estimator = "sinkhorn"
  config.eval.enabled = False
  train.train_and_evaluate(config, tmp_path)
  assert (tmp_path / "samples" / "grid.png").exists()
