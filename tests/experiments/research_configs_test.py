"""The research configs (CIFAR-10, CelebA) end to end at their `tiny` sizes on TFDS mock data.

`tfds.testing.mock_data` stands in for the prepared array_record files behind
`tfds.data_source`: the same code path as real data (CelebA streamed through grain), with
random pixels and labels. Each run trains both stages with the ResNet autoencoder and the
conv stage-2 networks, generates, and resumes exactly from a middle checkpoint.
"""

import copy
import json
import shutil

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

import lsdm_jax
from experiments.configs import celeba64_attributes, celeba_superres, cifar10_classcond
from lsdm_jax import evaluation, loop, stage2, train
from lsdm_jax.data.sources import load_source
from lsdm_jax.errors import DataError

CONFIGS = {
  "cifar10_classcond": cifar10_classcond,
  "celeba64_attributes": celeba64_attributes,
  "celeba_superres": celeba_superres,
}


def tiny(name, data_dir, **fields):
  config = CONFIGS[name].get_config("tiny")
  config.data.data_dir = str(data_dir)
  config.eval.enabled = name == "celeba64_attributes"  # One evaluation; the others'
  config.update(fields)  # metrics are tested on MNIST.
  return config


def logged(workdir, stage):
  """The numbers of `stage`'s lines of the run's metrics.jsonl."""
  rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  return [
    {k: v for k, v in r.items() if isinstance(v, float | int)} for r in rows if r["stage"] == stage
  ]


def newest_step(directory):
  return max(int(p.name) for p in directory.iterdir() if p.name.isdigit())


@pytest.fixture(scope="module")
def mock_runs(tmp_path_factory, lpips_weights):
  """Each tiny config trained once on mock data (eval only for attributes), by name. The
  CIFAR-10 run trains stage 1 with the whole recipe: LPIPS (random VGG weights) and the
  discriminator at its adaptive weight."""
  cache, root = {}, tmp_path_factory.mktemp("research")

  def get(name, compute_dtype="float32"):
    if (name, compute_dtype) not in cache:
      config = tiny(name, root / "tfds", compute_dtype=compute_dtype)
      if name == "cifar10_classcond":
        config.stage1.perceptual_weight, config.stage1.lpips_weights = 1.0, str(lpips_weights)
      workdir = root / f"{name}_{compute_dtype}"
      with tfds.testing.mock_data(num_examples=40):
        metrics = train.train_and_evaluate(config, workdir)
      cache[name, compute_dtype] = config, workdir, metrics
    return cache[name, compute_dtype]

  return get


@pytest.mark.parametrize(
  "name",
  ["cifar10_classcond", pytest.param("celeba_superres", marks=pytest.mark.slow)],
)
def test_tiny_config_trains_generates_and_resumes_exactly(name, mock_runs, tmp_path):
  config, workdir, _ = mock_runs(name)
  for stage in ("stage1", "stage2"):
    history = logged(workdir, stage)
    assert history and all(np.isfinite(v) for row in history for v in row.values()), stage
  # The adversarial term is on from disc_start, at a positive adaptive weight.
  s1 = logged(workdir, "stage1")[-1]
  assert s1["disc_factor"] == 1.0 and s1["adaptive_weight"] > 0
  # Exact resume: drop each stage's last checkpoint and what came after, then rerun.
  again = shutil.copytree(workdir, tmp_path / "again")
  for stage in ("stage1", "stage2"):
    shutil.rmtree(again / stage / str(newest_step(again / stage)))
  shutil.rmtree(again / "latents")
  (again / "metrics.json").unlink()
  with tfds.testing.mock_data(num_examples=40):
    train.train_and_evaluate(config, again)
  first, second = lsdm_jax.load(workdir), lsdm_jax.load(again)
  x = first.task.condition(*_conditions(first))
  a = first.generate(x, jax.random.key(0))
  assert a.shape == (len(x), *first.image_shape) and np.all((a >= 0) & (a <= 1))
  np.testing.assert_array_equal(a, second.generate(x, jax.random.key(0)))


def test_the_accelerator_branch_trains_and_resumes_exactly_on_the_cpu(
  mock_runs, tmp_path, monkeypatch
):
  """The programs a GPU or TPU runs (stage 2's scans looped, the finite-update guards
  selects), forced on the CPU with LSDM_JAX_CPU_WORKAROUNDS=0: the tiny CIFAR-10 run
  trains, resumes exactly, and logs the CPU branch's losses to float rounding."""
  monkeypatch.setenv(loop.CPU_WORKAROUNDS_ENV, "0")
  seen = {"conditional": set(), "unroll": set()}
  guarded_update, unroll_scans = loop.guarded_update, stage2.unroll_scans

  def spy_guard(*args, conditional=False, **kwargs):
    seen["conditional"].add(conditional)
    return guarded_update(*args, conditional=conditional, **kwargs)

  def spy_unroll(cfg):
    seen["unroll"].add(unroll_scans(cfg))
    return unroll_scans(cfg)

  monkeypatch.setattr(loop, "guarded_update", spy_guard)
  monkeypatch.setattr(stage2, "unroll_scans", spy_unroll)
  # The CPU branch's run (LPIPS and the adaptive weight included): the same config and data.
  cpu_config, cpu_workdir, _ = mock_runs("cifar10_classcond")
  config = copy.deepcopy(cpu_config)
  workdir = tmp_path / "run"
  with tfds.testing.mock_data(num_examples=40):
    train.train_and_evaluate(config, workdir)
  assert seen == {"conditional": {False}, "unroll": {False}}
  for stage, key in (("stage1", "loss"), ("stage2", "gen_loss")):
    ours, theirs = ([r[key] for r in logged(w, stage)] for w in (workdir, cpu_workdir))
    assert len(ours) == len(theirs) > 0 and np.all(np.isfinite(ours)), stage
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, err_msg=stage)
  again = shutil.copytree(workdir, tmp_path / "again")
  for stage in ("stage1", "stage2"):
    shutil.rmtree(again / stage / str(newest_step(again / stage)))
  shutil.rmtree(again / "latents")
  (again / "metrics.json").unlink()
  with tfds.testing.mock_data(num_examples=40):
    train.train_and_evaluate(config, again)
  first, second = lsdm_jax.load(workdir), lsdm_jax.load(again)
  x = first.task.condition(*_conditions(first))
  np.testing.assert_array_equal(
    first.generate(x, jax.random.key(0)), second.generate(x, jax.random.key(0))
  )


@pytest.mark.slow  # 30-40 s; CIFAR-10's tiny run stays in the default suite.
def test_superres_config_trains_and_super_resolves(mock_runs):
  _, workdir, _ = mock_runs("celeba_superres")
  assert all(np.isfinite(v) for row in logged(workdir, "stage2") for v in row.values())
  assert (workdir / "samples" / "superres.png").exists()
  model = lsdm_jax.load(workdir)
  low = np.random.default_rng(0).uniform(size=(3, 4, 4, 3)).astype(np.float32)
  assert model.generate(low, jax.random.key(0), n=2).shape == (6, 16, 16, 3)


@pytest.mark.slow  # 30-40 s; CIFAR-10's tiny run stays in the default suite.
def test_attributes_config_trains_and_scores_agreement_per_attribute(mock_runs):
  _, workdir, metrics = mock_runs("celeba64_attributes")
  assert (workdir / "samples" / "grid.png").exists()
  assert 0.0 <= metrics["agreement"] <= 1.0 and np.isfinite(metrics["fd"])
  names = {k.removeprefix("agreement_") for k in metrics if k.startswith("agreement_")}
  assert set(celeba64_attributes.ATTRIBUTES) <= names
  model = lsdm_jax.load(workdir)
  x = np.eye(4, dtype=np.float32)
  assert model.generate(x, jax.random.key(0), n=2).shape == (8, 16, 16, 3)
  assert model.generate(x[0], jax.random.key(0), n=3).shape == (3, 16, 16, 3)


def _conditions(model):
  """(images, labels, attributes) a task turns into four conditions."""
  h, w, c = model.image_shape
  images = np.random.default_rng(0).uniform(size=(4, h, w, c)).astype(np.float32)
  k = model.task.cond_shape[0] if model.task.cond_kind == "attributes" else 0
  attributes = np.eye(max(k, 1), dtype=np.float32)[np.arange(4) % max(k, 1)][:, :k]
  return images, np.arange(4) % max(model.task.num_classes, 1), attributes


@pytest.mark.parametrize("name", list(CONFIGS))
def test_without_the_prepared_data_the_run_stops_in_one_line(name, tmp_path):
  config = tiny(name, tmp_path / "empty")
  with pytest.raises(DataError) as e:
    train.train_and_evaluate(config, tmp_path / "run")
  message = str(e.value)
  assert "\n" not in message and "tfds build" in message and "is not prepared" in message
  assert not (tmp_path / "run").exists()


@pytest.mark.slow  # 30-40 s; CIFAR-10's tiny run stays in the default suite.
def test_bfloat16_compute_stays_within_tolerance_of_float32(mock_runs):
  """bfloat16 activations (float32 parameters, optimiser state and losses): the tiny CIFAR
  run's losses stay within 2% of the float32 run's and its samples within 0.02 mean
  absolute pixel difference, from the same initial parameters and data."""
  dirs = {d: mock_runs("cifar10_classcond", d)[1] for d in ("float32", "bfloat16")}
  runs = {d: lsdm_jax.load(w) for d, w in dirs.items()}
  for stage in ("stage1", "stage2"):
    rows = {d: logged(dirs[d], stage) for d in runs}
    key = "loss" if stage == "stage1" else "gen_loss"
    f32, bf16 = (np.array([r[key] for r in rows[d]]) for d in ("float32", "bfloat16"))
    assert np.all(np.isfinite(bf16))
    scale = np.abs(f32).max() if stage == "stage2" else np.abs(f32)
    assert np.all(np.abs(bf16 - f32) <= 0.02 * scale), (stage, f32, bf16)
  labels = np.arange(10)
  a, b = (runs[d].generate(labels, jax.random.key(0)) for d in ("float32", "bfloat16"))
  assert np.mean(np.abs(a - b)) < 0.02
  params = jax.tree.leaves(runs["bfloat16"].params)
  assert all(p.dtype == np.float32 for p in params)


# --------------------------------------------------------------------------- FID protocol

PROTOCOL_KEYS = {"fid", "fid_real", "fid_num_samples", "fid_num_real", "fid_reference_images"} | {
  f"{name}_inception{suffix}"
  for name in ("precision", "recall", "density", "coverage")
  for suffix in ("", "_real")
}


def test_research_configs_score_fid_on_50k_samples():
  for name, module in CONFIGS.items():
    assert module.get_config().eval.num_samples == 50_000, name
    assert 0 < module.get_config("tiny").eval.num_samples <= 10, name


def check_protocol(metrics, n, n_real, n_reference):
  assert PROTOCOL_KEYS <= set(metrics)
  assert all(np.isfinite(metrics[k]) for k in PROTOCOL_KEYS)
  assert metrics["fid"] >= 0 and metrics["fid_real"] >= 0
  for name in ("precision", "recall", "coverage"):
    assert 0 <= metrics[f"{name}_inception"] <= 1 and 0 <= metrics[f"{name}_inception_real"] <= 1
  assert metrics["density_inception"] >= 0 and metrics["density_inception_real"] >= 0
  counts = (metrics["fid_num_samples"], metrics["fid_num_real"], metrics["fid_reference_images"])
  assert counts == (n, n_real, n_reference)


def protocol_on_few_images(name, mock_runs, inception_weights):
  """The FID protocol with random Inception weights of a tiny run: 4 samples scored against
  a mock data set of 6 images a split (4 of its test images for the floor), the fewest the
  k-NN metrics allow: 14 images through the net, up to a second each on a CPU."""
  config, workdir, _ = mock_runs(name)
  config = copy.deepcopy(config)
  config.eval.inception_weights = str(inception_weights)
  config.eval.inception_batch_size = 2
  with tfds.testing.mock_data(num_examples=40):
    exp = train.setup(config)
  d = config.data
  with tfds.testing.mock_data(num_examples=6):
    small = load_source(
      d.source, data_dir=d.data_dir, image_size=d.image_size, attributes=tuple(d.attributes)
    )
  model = lsdm_jax.load(workdir)
  return evaluation.fid_protocol(model, exp, config, 4, jax.random.key(0), small)


@pytest.mark.slow  # The protocol's own tests (evaluation_test.py) run by default.
def test_tiny_cifar10_run_reports_the_fid_protocol(mock_runs, inception_weights):
  metrics = protocol_on_few_images("cifar10_classcond", mock_runs, inception_weights)
  check_protocol(metrics, 4, 4, 6)


@pytest.mark.slow  # The CelebA runs train for 30-40 s, then 14 images through Inception.
@pytest.mark.parametrize("name", ["celeba64_attributes", "celeba_superres"])
def test_tiny_celeba_runs_report_the_fid_protocol(name, mock_runs, inception_weights):
  metrics = protocol_on_few_images(name, mock_runs, inception_weights)
  check_protocol(metrics, 4, 4, 6)


@pytest.mark.slow  # A whole run, then 56 images through Inception: about a minute on a CPU.
def test_tiny_cifar10_run_with_inception_weights_writes_the_fid_protocol(
  tmp_path, inception_weights
):
  config = tiny("cifar10_classcond", tmp_path / "tfds")
  config.eval.enabled = True
  config.eval.inception_weights = str(inception_weights)
  config.eval.inception_batch_size = 8
  with tfds.testing.mock_data(num_examples=40):
    metrics = train.train_and_evaluate(config, tmp_path / "run")
  n = config.eval.num_samples
  check_protocol(metrics, n, n, 40)  # n of the 40 test images; every train image.
  written = json.loads((tmp_path / "run" / "metrics.json").read_text())
  assert {k: written[k] for k in PROTOCOL_KEYS} == {k: metrics[k] for k in PROTOCOL_KEYS}
