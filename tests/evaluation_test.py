"""Tests for a run's evaluation: one code path for every task, and its config checks.

The FID protocol's streaming is tested with a cheap stand-in for the Inception net (a fixed
random projection of the pixels): the statistics, the chunks and the cache do not depend on
the net, and the Inception net runs at about a second per image on a CPU. The net itself is
tested in tests/metrics/inception_*; a run with it, in tests/experiments/research_configs_test.py.
"""

import copy
import dataclasses

import jax
import numpy as np
import pytest

import lsdm_jax
from experiments.configs import test as tiny
from lsdm_jax import evaluation, train
from lsdm_jax.data.experiment import Experiment
from lsdm_jax.data.sources import to_float
from lsdm_jax.data.tasks import avg_pool, make_task
from lsdm_jax.errors import ConfigError, DataError
from lsdm_jax.metrics import scores


def test_every_kind_of_condition_has_an_evaluation():
  kinds = {
    make_task("classcond", (8, 8, 1), 3).cond_kind,
    make_task("attributes", (8, 8, 1), 0, num_attributes=2).cond_kind,
    make_task("superres", (8, 8, 1), 0).cond_kind,
  }
  assert kinds == set(evaluation.TASKS)


def test_evaluate_again_gives_the_run_s_metrics(tiny_run):
  config, workdir, metrics = tiny_run
  again = evaluation.evaluate(lsdm_jax.load(workdir), train.setup(config), config)
  timed = {"generate_seconds_per_1000"}
  # CAS trains a net for 300 steps on the samples: on 8 devices the reloaded model's
  # samples differ from the run's in the last float bit (another sharding of the same
  # program), which moves a few of its test predictions. Everything else is continuous.
  trained = {"cas", "cas_ratio"}
  assert set(again) == set(metrics) - {"timings"}
  for name in set(again) - timed - trained:
    assert again[name] == pytest.approx(metrics[name], rel=1e-5, abs=1e-6), name
  for name in trained:
    assert again[name] == pytest.approx(metrics[name], abs=0.005), name
  assert all(isinstance(v, float) for v in again.values())


def test_an_unknown_reference_is_a_config_error(tiny_run):
  config, workdir, _ = tiny_run
  with pytest.raises(ConfigError, match="reference 'train' is not one of"):
    evaluation.evaluate(lsdm_jax.load(workdir), train.setup(config), config, reference="train")


@pytest.mark.slow  # experiments/evaluate_test.py checks the same through the command.
def test_unpaired_reference_leaves_out_the_bound(tiny_run):
  config, workdir, _ = tiny_run
  m = evaluation.evaluate(lsdm_jax.load(workdir), train.setup(config), config, "unpaired")
  assert "fd_ratio" in m and not any(k.startswith("bound_") for k in m)


def test_missing_inception_weights_fail_before_anything_runs(tmp_path):
  config = tiny.get_config()
  config.eval.inception_weights = str(tmp_path / "nope.npz")
  with pytest.raises(DataError, match="eval.inception_weights=.*does not exist"):
    train.check_config(config)
  config.eval.enabled = False  # Nothing reads the weights then.
  train.check_config(config)


def test_pictures_are_written_for_the_run(tiny_run):
  _, workdir, _ = tiny_run
  for name in ("samples/grid.png", "samples/reconstructions.png", "curves/stage1.png"):
    assert (workdir / name).stat().st_size > 0


# --------------------------------------------------------------------------- FID protocol


def projection_features(images: np.ndarray) -> np.ndarray:
  """(n, H, W, C) float32 [0, 1] -> (n, 16) float64: a fixed random projection of pixels."""
  x = images.reshape(len(images), -1).astype(np.float64)
  w = np.random.default_rng(0).standard_normal((x.shape[1], 16)) / np.sqrt(x.shape[1])
  return x @ w


@pytest.fixture
def protocol_run(tiny_run):
  """(lsdm, exp, config) of the tiny run, with 8-image feature batches."""
  config, workdir, _ = tiny_run
  config = copy.deepcopy(config)
  config.eval.inception_batch_size = 8
  return lsdm_jax.load(workdir), train.setup(config), config


def test_fid_protocol_streams_what_the_all_at_once_computation_gives(protocol_run, monkeypatch):
  lsdm, exp, config = protocol_run
  # 60 samples in chunks of 24 (the last padded); 40 rows of each set kept for the k-NN
  # metrics, a true subset of the 60 samples and of the 4,000 train images.
  monkeypatch.setattr(evaluation, "GENERATE_CHUNK", 24)
  monkeypatch.setattr(evaluation, "KEEP_ROWS", 40)
  key = jax.random.key(3)
  got = evaluation.fid_protocol(
    lsdm, exp, config, 60, key, features=projection_features, feature_name="projection"
  )

  ds = exp.dataset
  spec = evaluation.TASKS["label"].protocol(exp, ds, config, 60)
  labels = np.arange(60) % 10
  samples = np.concatenate(
    [
      lsdm.generate(labels[a : a + 24], jax.random.fold_in(key, c), batch_size=24)
      for c, a in enumerate(range(0, 60, 24))
    ]
  )
  expected = scores.inception_metrics(
    samples,
    ds.train_images,
    ds.test_images[spec.real_rows],
    projection_features,
    keep=40,
    seed=config.eval.seed,
  )
  assert set(got) == set(expected)
  for name, value in expected.items():
    assert got[name] == pytest.approx(value, rel=1e-6, abs=1e-9), name
  assert got["fid_num_samples"] == 60 and got["fid_num_real"] == 60
  assert got["fid_reference_images"] == len(ds.train_images)
  # The tiny run's samples are far from the data and cover little of it; real images not.
  assert got["fid"] > 10 * got["fid_real"] > 0
  assert got["recall_inception_real"] > got["recall_inception"]


def test_fid_protocol_reads_the_data_s_statistics_from_the_cache(
  protocol_run, monkeypatch, tmp_path
):
  lsdm, exp, config = protocol_run
  monkeypatch.setenv("LSDM_JAX_CACHE", str(tmp_path))
  monkeypatch.setattr(evaluation, "KEEP_ROWS", 200)  # k-NN radii of 4,000 rows take seconds.
  read = []  # The number of images of each pass over real data.
  batches = evaluation._image_batches

  def counting(images, rows, chunk):
    read.append(len(images) if rows is None else len(rows))
    return batches(images, rows, chunk)

  monkeypatch.setattr(evaluation, "_image_batches", counting)

  def protocol(n):
    return evaluation.fid_protocol(
      lsdm, exp, config, n, jax.random.key(0), features=projection_features, feature_name="p"
    )

  first = protocol(12)
  assert read == [4000, 12]  # The train split (the reference), then 12 test images.
  assert protocol(12) == first and read == [4000, 12]  # Both from the cache.
  protocol(16)  # The same chunk shape (two 8-image batches), no new compilation.
  assert read == [4000, 12, 16]  # Another choice of test images; the same reference.
  assert len(list((tmp_path / "fid_reference").glob("*.npz"))) == 3
  # A data set nobody named is read every time, and nothing is cached for it.
  anonymous = dataclasses.replace(exp.dataset, fingerprint="")
  again = evaluation.fid_protocol(
    lsdm,
    exp,
    config,
    12,
    jax.random.key(0),
    anonymous,
    features=projection_features,
    feature_name="p",
  )
  assert again == first and read == [4000, 12, 16, 4000, 12]
  assert len(list((tmp_path / "fid_reference").glob("*.npz"))) == 3


def test_fid_protocol_conditions_follow_the_task(mnist5k):
  config = tiny.get_config()
  # 12 binary attributes that spell each train row's number: a vector names its row.
  bits = 2 ** np.arange(12)
  attributes = ((np.arange(len(mnist5k.train_images))[:, None] & bits) > 0).astype(np.float32)
  ds = dataclasses.replace(mnist5k, train_attributes=attributes)

  def spec(kind, task, n):
    exp = Experiment(ds, task, None)
    return evaluation.TASKS[kind].protocol(exp, ds, config, n)

  labels = spec("label", make_task("classcond", (28, 28, 1), 10), 25)
  assert labels.count == 25 and len(labels.real_rows) == 25
  np.testing.assert_array_equal(np.bincount(labels.conditions(0, 25)), [3] * 5 + [2] * 5)
  assert np.all(np.diff(labels.real_rows) > 0) and labels.real_rows[-1] < 1000

  attrs = spec("attributes", make_task("attributes", (28, 28, 1), 0, num_attributes=12), 40)
  x = np.concatenate([attrs.conditions(0, 15), attrs.conditions(15, 40)])
  assert x.shape == (40, 12)
  # The vectors of 40 distinct train rows drawn over the split: the data's own joint.
  rows = (x @ bits).astype(int)
  assert len(set(rows)) == 40 and rows.max() - rows.min() > 2000
  np.testing.assert_array_equal(x, attributes[rows])
  assert len(attrs.real_rows) == 40

  superres = spec("image", make_task("superres", (28, 28, 1), 10, factor=4), 30)
  rows = superres.real_rows
  np.testing.assert_array_equal(
    superres.conditions(5, 9), avg_pool(to_float(ds.test_images[rows[5:9]]), 4)
  )
  whole = spec("image", make_task("superres", (28, 28, 1), 10, factor=4), 50_000)
  assert whole.count == 1000  # One sample per test input: the whole split, no more.
  np.testing.assert_array_equal(whole.real_rows, np.arange(1000))


def test_fid_protocol_needs_enough_images(protocol_run, tmp_path):
  lsdm, exp, config = protocol_run
  (tmp_path / "weights.npz").touch()  # The check only asks that the file exists.
  config.eval.inception_weights = str(tmp_path / "weights.npz")
  config.eval.num_samples = evaluation.MIN_PROTOCOL_IMAGES - 1
  with pytest.raises(ConfigError, match="eval.num_samples=3 is too few"):
    evaluation.check_config(config)
  config.eval.num_samples = 0  # The task's own count.
  evaluation.check_config(config)
  with pytest.raises(DataError, match="has 3 samples"):
    evaluation.fid_protocol(
      lsdm, exp, config, 3, jax.random.key(0), features=projection_features, feature_name="p"
    )
  few = dataclasses.replace(exp.dataset, train_images=exp.dataset.train_images[:5])
  with pytest.raises(DataError, match="has 5 train images; .* at least 6"):
    evaluation.fid_protocol(
      lsdm,
      exp,
      config,
      4,
      jax.random.key(0),
      few,
      features=projection_features,
      feature_name="p",
    )
