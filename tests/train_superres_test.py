"""End to end for super-resolution on the tiny config: train, picture, metrics, export."""

import json

import numpy as np
import pytest

import lsdm_jax
from experiments import generate
from experiments.configs import test as test_config
from lsdm_jax import summaries, train


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("superres")
  config = test_config.get_config()
  config.task.name = "superres"
  config.eval.num_inputs = 40
  metrics = train.train_and_evaluate(config, workdir)
  return config, workdir, metrics


def test_superres_pipeline_writes_picture_and_metrics(run):
  _, workdir, metrics = run
  assert (workdir / "samples" / "superres.png").exists()
  assert not (workdir / "samples" / "grid.png").exists()
  saved = json.loads((workdir / "metrics.json").read_text())
  for name in ("psnr", "ssim", "consistency", "fd", "fd_pixels", "precision", "recall"):
    assert np.isfinite(saved[name]), name
  assert saved["num_samples"] == 40 and -1.0 <= saved["ssim"] <= 1.0
  assert saved == json.loads(json.dumps(metrics))


def test_superres_pipeline_writes_tensorboard_picture_and_metrics(run):
  config, workdir, _ = run
  saved = json.loads((workdir / "metrics.json").read_text())
  images, scalars = {}, {}
  for event in summaries.read_events(workdir / "tensorboard"):
    for v in event.summary.value:
      if v.HasField("image"):
        images[v.tag] = (event.step, v.image.height, v.image.width)
      elif v.tag.startswith("eval/"):
        scalars[v.tag] = (event.step, v.simple_value)
  step = config.stage2.steps
  assert images == {
    "samples/superres": (step, 10 * 29 + 1, 8 * 29 + 1),  # As the PNG, not enlarged.
    "samples/reconstructions": (step, 2 * 29 + 1, 16 * 29 + 1),
  }
  assert scalars == {f"eval/{k}": (step, np.float32(v)) for k, v in saved.items() if k != "timings"}


def test_superres_picture_has_input_samples_and_truth_rows(run):
  import matplotlib.pyplot as plt

  _, workdir, _ = run
  png = plt.imread(workdir / "samples" / "superres.png")
  # 10 rows (input, 8 samples, truth) by 8 columns of 28 px + 1 px padding, enlarged 2x.
  assert png.shape[:2] == (2 * (10 * 29 + 1), 2 * (8 * 29 + 1))


def test_generate_exports_inputs_and_source_rows(run, tmp_path):
  from lsdm_jax.data import load_source

  _, workdir, _ = run
  out = tmp_path / "sr.npz"
  generate.export(workdir, out, num=12, split="test")
  with np.load(out) as f:
    images, inputs, indices = f["images"], f["inputs"], f["indices"]
  assert images.shape == (12, 28, 28, 1) and images.dtype == np.float32
  assert inputs.shape == (12, 7, 7, 1) and indices.shape == (12,)
  assert 0.0 <= images.min() and images.max() <= 1.0
  ds = load_source("mnist5k")
  rows = np.searchsorted(ds.test_index, indices)
  np.testing.assert_array_equal(ds.test_index[rows], indices)
  truth = ds.test_images[rows].astype(np.float32) / 255.0
  pooled = truth.reshape(12, 7, 4, 7, 4, 1).mean(axis=(2, 4))
  np.testing.assert_allclose(inputs, pooled, atol=1e-6)


def test_superres_baselines_score_on_the_runs_paired_set(run):
  from experiments import kinds, study

  config, workdir, metrics = run

  class Study:  # What the kind reads from its study: the reference run's rows.
    def rows(self, name):
      return [{"metrics": metrics}]

  config = config.copy_and_resolve_references()
  config.superres_regressor.steps = 5
  config.superres_regressor.steps_per_call = 5
  spec = study.Run("b", 0, "superres_baselines", {}, {"reference": "a_s0"})
  rows = kinds.run_superres_baselines(spec, config, workdir, Study())
  assert [r["setting"] for r in rows] == ["b_bicubic", "b_regression"]
  for r in rows:
    assert r["metrics"]["spread"] == 0.0 and r["metrics"]["spread_real"] == metrics["spread_real"]
    assert all(np.isfinite(r["metrics"][k]) for k in ("psnr", "ssim", "consistency", "fd"))


def test_projection_rescoring_trades_consistency_and_keeps_the_unprojected_metrics(run):
  from experiments import kinds

  _, workdir, metrics = run
  same = kinds._rescore_projected(lsdm_jax.load(workdir), 0.0)
  for k in ("psnr", "consistency", "fd", "spread"):
    assert same[k] == pytest.approx(metrics[k], rel=1e-5), k
  full = kinds._rescore_projected(lsdm_jax.load(workdir), 1.0)
  assert full["consistency"] > same["consistency"] + 3.0
  assert json.loads((workdir / "metrics.json").read_text()) == json.loads(json.dumps(metrics))
