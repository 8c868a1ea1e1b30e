"""End to end for super-resolution on the tiny config: train, picture, metrics, export."""

import json

import numpy as np
import pytest

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


def test_superres_table_has_baselines_and_lsdm_rows(run, capsys):
  from experiments import superres_table

  _, workdir, metrics = run
  table = superres_table.make_table(workdir, regression_steps=5)
  assert table == (workdir / "superres_table.md").read_text()
  lines = [line for line in table.splitlines() if line.startswith("| ")]
  assert [line.split("|")[1].strip().split(" ")[0] for line in lines[1:]] == [
    "bicubic",
    "L2",
    "LSDM",
  ]
  assert f"{metrics['psnr']:.2f}" in lines[-1] and "–" not in table


def test_projection_rescoring_trades_consistency_and_keeps_the_unprojected_metrics(run):
  from experiments import superres_table

  _, workdir, metrics = run
  same = superres_table.rescore_projected(workdir, 0.0)
  for k in ("psnr", "consistency", "fd", "spread"):
    assert same[k] == pytest.approx(metrics[k], rel=1e-5), k
  full = superres_table.rescore_projected(workdir, 1.0)
  assert full["consistency"] > same["consistency"] + 3.0
  assert json.loads((workdir / "metrics.json").read_text()) == json.loads(json.dumps(metrics))
