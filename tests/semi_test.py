"""The semi-supervised stage 2's parts: labeller, pseudo-pair selection and weights, and
weighted batch sampling; and the mode through the pipeline on the test config."""

from __future__ import annotations

import json

import jax
import ml_collections
import numpy as np
import pytest

from experiments.configs import mnist5k_classcond, mnist5k_superres
from experiments.configs import test as test_config
from lsdm_jax import config as config_lib
from lsdm_jax import semi, train
from lsdm_jax.errors import ConfigError, DataError


def _blobs(seed=0, k=3, per=60, labelled=2, dim=4, spread=0.3):
  """k well-separated Gaussian blobs; `labelled` labelled points per blob."""
  rng = np.random.default_rng(seed)
  centres = rng.normal(size=(k, dim)) * 6
  z = np.concatenate([c + spread * rng.normal(size=(per, dim)) for c in centres])
  y = np.repeat(np.arange(k), per)
  lab = np.concatenate([np.arange(labelled) + i * per for i in range(k)])
  unl = np.setdiff1d(np.arange(len(z)), lab)
  return z[lab], y[lab], z[unl], y[unl]


def _cfg(**kw):
  c = config_lib.base_config().semi
  c.update(kw)
  return c


def test_knn_graph_matches_brute_force_across_blocks():
  z = np.random.default_rng(1).normal(size=(37, 3)).astype(np.float32)
  idx, d2 = semi.knn_graph(z, 4, block=16)  # 37 rows: three blocks, the last padded.
  full = ((z[:, None] - z[None]) ** 2).sum(-1)
  np.fill_diagonal(full, np.inf)
  np.testing.assert_array_equal(np.sort(np.asarray(idx), 1), np.sort(np.argsort(full, 1)[:, :4], 1))
  np.testing.assert_allclose(np.asarray(d2), np.sort(full, 1)[:, :4], rtol=1e-4, atol=1e-4)


def test_label_spreading_follows_the_unlabelled_manifold():
  zl, yl, zu, yu = _blobs()
  probs = np.asarray(semi.label_spreading(zl, yl, zu, 3))
  assert probs.shape == (len(zu), 3)
  np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
  assert np.mean(probs.argmax(1) == yu) == 1.0


def test_label_spreading_beats_a_vote_of_the_labelled_points_on_chains():
  # Two interleaved chains: near their ends, the nearest *labelled* point is of the other
  # chain, but the chain's own points connect back to its label.
  t = np.linspace(0, 1, 80)
  a = np.stack([t * 10, np.zeros_like(t)], 1)
  b = np.stack([t * 10, np.full_like(t, 1.0)], 1) + np.array([0.0, 0.0])
  z = np.concatenate([a, b]).astype(np.float32)
  y = np.repeat([0, 1], 80)
  lab = np.array([0, 159])  # The left end of chain a, the right end of chain b.
  unl = np.setdiff1d(np.arange(160), lab)
  spread = np.asarray(semi.label_spreading(z[lab], y[lab], z[unl], 2, neighbours=2))
  vote = np.asarray(semi.knn_vote(z[lab], y[lab], z[unl], 2, neighbours=1))
  assert np.mean(spread.argmax(1) == y[unl]) > 0.95
  assert np.mean(vote.argmax(1) == y[unl]) < 0.6


def test_pseudo_pairs_threshold_and_class_balance():
  probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.4, 0.6], [0.45, 0.55]])
  paired = np.array([0, 1, 1, 1])  # Shares 1/4, 3/4.
  pairs = semi.pseudo_pairs(_cfg(threshold=0.6, balance=False), probs, paired, 2)
  np.testing.assert_array_equal(pairs.rows, [0, 1, 2, 3])
  np.testing.assert_array_equal(pairs.labels, [0, 0, 0, 1])
  np.testing.assert_allclose(pairs.weights, 1.0)
  balanced = semi.pseudo_pairs(_cfg(threshold=0.6), probs, paired, 2)
  mass = np.bincount(balanced.labels, weights=balanced.weights)
  np.testing.assert_allclose(mass / mass.sum(), [0.25, 0.75], rtol=1e-6)
  np.testing.assert_allclose(balanced.weights.sum(), 4.0, rtol=1e-6)  # Total mass kept.
  soft = semi.pseudo_pairs(_cfg(threshold=0.0, weighting="soft", balance=False), probs, paired, 2)
  np.testing.assert_allclose(soft.weights, probs.max(1) * 1.0, rtol=1e-6)
  heavy = semi.pseudo_pairs(
    _cfg(threshold=0.6, pseudo_weight=0.25, balance=False), probs, paired, 2
  )
  np.testing.assert_allclose(heavy.weights, 0.25)


def test_weighted_rows_are_drawn_in_proportion():
  weights = np.array([1.0, 0.0, 3.0, 4.0])
  cdf = semi.sampling_cdf(weights)
  rows = np.asarray(semi.draw_rows(jax.random.key(0), cdf, (200_000,)))
  freq = np.bincount(rows, minlength=4) / len(rows)
  np.testing.assert_allclose(freq, weights / weights.sum(), atol=0.005)
  assert freq[1] == 0.0
  with pytest.raises(DataError):
    semi.sampling_cdf([0.0, 0.0])


def test_labeller_refuses_a_class_without_pairs_and_no_unpaired():
  zl, yl, zu, _ = _blobs()
  with pytest.raises(DataError, match="class"):
    semi.class_probabilities(_cfg(), zl, np.where(yl == 2, 1, yl), zu, 3)
  with pytest.raises(ConfigError, match="n_unpaired"):
    semi.class_probabilities(_cfg(), zl, yl, zu[:0], 3)


@pytest.mark.parametrize(
  "field,value",
  [
    ("labeller", "svm"),
    ("weighting", "fuzzy"),
    ("threshold", 1.5),
    ("alpha", 1.0),
    ("neighbours", 0),
    ("pseudo_weight", 0.0),
  ],
)
def test_bad_semi_fields_are_config_errors(field, value):
  c = config_lib.base_config()
  c.semi[field] = value
  with pytest.raises(ConfigError, match=f"semi.{field}"):
    train.check_config(c)


def test_projection_makes_outputs_pool_to_the_input():
  from lsdm_jax.data.tasks import avg_pool
  from lsdm_jax.sampling import project_to_input

  rng = np.random.default_rng(0)
  images = rng.uniform(0.2, 0.8, size=(3, 8, 8, 1)).astype(np.float32)
  x = avg_pool(rng.uniform(0.3, 0.7, size=(3, 8, 8, 1)).astype(np.float32), 4)
  out = np.asarray(project_to_input(images, x, 4))
  np.testing.assert_allclose(avg_pool(out, 4), x, atol=1e-6)
  half = np.asarray(project_to_input(images, x, 4, 0.5))  # Half way: half the residual.
  np.testing.assert_allclose(avg_pool(half, 4) - x, 0.5 * (avg_pool(images, 4) - x), atol=1e-6)
  # Within each block the image keeps its own detail: only the block mean moves.
  d = out - images
  np.testing.assert_allclose(
    d[:, :4, :4], np.broadcast_to(d[:, :1, :1], d[:, :4, :4].shape), atol=1e-6
  )


@pytest.mark.parametrize("field", ["stage2.consistency_weight", "task.projection"])
def test_degradation_options_need_superres(field):
  c = config_lib.base_config()
  section, name = field.split(".")
  c[section][name] = 10.0 if name == "consistency_weight" else 0.5
  with pytest.raises(ConfigError, match="superres"):
    train.check_config(c)


def test_semi_without_unpaired_is_a_config_error():
  c = config_lib.base_config()
  c.semi.enabled, c.data.n_unpaired = True, 0
  with pytest.raises(ConfigError, match="data.n_unpaired"):
    train.check_config(c)


def test_named_variants():
  assert not mnist5k_classcond.get_config().semi.enabled
  semi_cfg = mnist5k_classcond.get_config("semi")
  assert semi_cfg.semi.enabled and semi_cfg.stage2.estimator == "critic"
  assert mnist5k_classcond.get_config("semi_sinkhorn").stage2.estimator == "sinkhorn"
  assert mnist5k_superres.get_config("semi").semi.enabled
  assert not mnist5k_superres.get_config().semi.enabled
  with pytest.raises(ConfigError):
    mnist5k_classcond.get_config("semi_magic")


def _tiny(task: str) -> ml_collections.ConfigDict:
  c = test_config.get_config()
  c.update_from_flattened_dict(
    {
      "data.n_paired": 40,
      "data.n_unpaired": 80,
      "stage1.features": (4, 8),
      "stage1.hidden": 16,
      "stage1.latent_dim": 4,
      "stage1.batch_size": 16,
      "stage2.hidden": (16, 16),
      "stage2.critic_hidden": (16, 16),
      "stage2.cond_features": 8,
      "stage2.noise_dim": 4,
      "stage2.batch_size": 16,
      "stage2.n_critic": 1,
    }
  )
  c.semi.enabled = True
  c.task.name = task
  c.eval.num_inputs = 40
  c.mesh.data = 2
  return c


@pytest.mark.slow  # 25 s; the labellers and pseudo pairs are tested above.
def test_semi_classcond_run_trains_on_pseudo_pairs_and_logs_the_labeller(tmp_path):

  c = _tiny("classcond")
  results = train.train_and_evaluate(c, tmp_path)
  saved = json.loads((tmp_path / "metrics.json").read_text())
  for k in ("semi_labeller_accuracy_unpaired", "semi_labeller_accuracy_test", "semi_coverage"):
    assert 0.0 <= saved[k] <= 1.0
  assert 0.1 < results["semi_labeller_accuracy_unpaired"]  # Better than nothing.
  labels = np.load(tmp_path / "semi_labels.npz", allow_pickle=False)
  exp = train.setup(c)
  assert set(labels["rows"]) <= set(exp.split.unpaired)
  assert len(labels["rows"]) == saved["semi_pseudo_pairs"]
  assert np.isfinite(saved["fd"]) and np.isfinite(saved["accuracy"])


@pytest.mark.slow  # The classcond run above covers the semi mode's pipeline by default.
def test_semi_superres_uses_exact_conditions(tmp_path):

  c = _tiny("superres")
  c.stage2.consistency_weight = 100.0
  c.task.projection = 1.0
  results = train.train_and_evaluate(c, tmp_path)
  assert results["semi_pseudo_pairs"] == c.data.n_unpaired
  lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert any(np.isfinite(r.get("consistency_mse", np.nan)) for r in lines)
  assert results["consistency"] > 30.0  # Projected onto the inputs (up to clipping).
  for k in ("spread", "spread_real", "spread_ratio", "spread_too_sure", "recon_consistency"):
    assert np.isfinite(results[k])
  assert (tmp_path / "samples" / "superres_too_sure.png").exists()
