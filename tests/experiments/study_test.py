"""experiments.study: the studies the configs declare, the runner's bookkeeping (on
stand-in kinds) and, marked `slow`, the tiny studies end to end in a subprocess."""

from __future__ import annotations

import json
import math
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

from experiments import kinds, study
from lsdm_jax.errors import ConfigError

ROOT = pathlib.Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "experiments" / "configs"


def _plan(name, which):
  module = study.load_module(str(CONFIGS / f"{name}.py"))
  return module, study.plan(module, which)


def test_the_unpaired_study_covers_the_grid_the_extension_and_the_baselines():
  _, runs = _plan("mnist5k_classcond", "unpaired")
  lsdm = [r for r in runs if r.kind == "lsdm"]
  paper = [r for r in lsdm if r.fields["stage2.unpaired_weight"] == 0]
  assert len(paper) == 2 * 4 * 3 * 2  # n_paired x n_unpaired x seeds x estimators.
  assert len(lsdm) - len(paper) == 4 * 3 * 3  # Extension at the three n_unpaired > 0.
  assert sorted(r.kind for r in runs if r.kind != "lsdm") == sorted(
    ["latent_diffusion", "pixel_wgcs", "cvae"] * 2 * 3
  )
  names = [r.name for r in runs]
  assert "lsdm_critic_p500_u3500_w0_s2" in names and "lsdm_sinkhorn_p100_u500_w0.5_s1" in names
  for r in runs:  # A baseline comes after the LSDM run it uses.
    if "reference" in r.options:
      assert names.index(r.options["reference"]) < names.index(r.name)


def test_run_configs_are_the_variants_with_the_grid_fields():
  module, runs = _plan("mnist5k_classcond", "quick")
  s = study.Study(module, runs, "unused", {"stage2.log_every": 50})
  c = s.configs["lsdm_sinkhorn_p500_u3500_w0_s1"]
  assert c.stage2.estimator == "sinkhorn" and c.stage2.learning_rate == 3e-4
  assert c.stage2.steps == 800 and c.stage1.steps == 800
  assert c.seed == c.data.split_seed == 1 and c.data.n_unpaired == 3500
  assert c.stage2.log_every == 50  # The command line's override reaches every run.
  ldm = s.configs["latent_diffusion_p500_s1"]  # The reference's data, its own section.
  assert ldm.data.to_dict() == s.configs["lsdm_critic_p500_u3500_w0_s1"].data.to_dict()
  assert ldm.latent_diffusion.steps == 500 and s.configs["cvae_p500_s0"].cvae.steps == 1000


@pytest.mark.parametrize(
  "overrides, message",
  [({"data.n_unpaired": 10}, "the study sets them per run"), ({"seed": 3}, "per run")],
)
def test_an_override_of_a_grid_field_is_an_error(overrides, message):
  module, runs = _plan("mnist5k_classcond", "quick")
  with pytest.raises(ConfigError, match=message):
    study.Study(module, runs, "unused", overrides)


def test_only_must_be_a_regular_expression_that_matches_a_run():
  _, runs = _plan("mnist5k_classcond", "quick")
  study.check_only(runs, "_s1$")
  for only, message in (("(", "is not a regular expression"), ("^nope$", "matches none")):
    with pytest.raises(ConfigError, match=message):
      study.check_only(runs, only)


def test_a_bad_baseline_value_on_the_command_line_is_a_config_error():
  from lsdm_jax import config as config_lib

  module, runs = _plan("mnist5k_classcond", "quick")
  s = study.Study(module, runs, "unused", {"latent_diffusion.steps": 0})
  with pytest.raises(ConfigError, match="latent_diffusion.steps"):
    config_lib.validate(s.configs["latent_diffusion_p500_s0"])


def test_every_study_of_every_config_builds_valid_configs():
  from lsdm_jax import train

  for name, studies in (
    (
      "mnist5k_classcond",
      ("unpaired", "quick", "long", "semi", "semi_ablations", "seeds", "steps"),
    ),
    ("mnist5k_superres", ("baselines",)),
    ("test", ("unpaired", "semi")),
  ):
    for which in studies:
      module, runs = _plan(name, which)
      s = study.Study(module, runs, "unused")
      assert runs and all(r.kind in kinds.KINDS for r in runs), (name, which)
      for config in s.configs.values():
        train.check_config(config)
  with pytest.raises(ConfigError, match="unknown study 'nope'"):
    _plan("mnist5k_classcond", "nope")


def test_a_reference_must_be_a_run_added_before(tmp_path):
  path = tmp_path / "bad.py"
  path.write_text(
    "def sweep(add, study):\n  add('c', 0, 'cvae', reference='a_s0')\n  add('a', 0)\n"
  )
  with pytest.raises(ConfigError, match="reference a_s0 is not a run added before it"):
    study.plan(study.load_module(str(path)), "x")


# --------------------------------------------------------------------------- bookkeeping


def _fake_module(tmp_path):
  path = tmp_path / "fake.py"
  path.write_text(
    "from experiments.configs import test\n"
    "def get_config(variant='critic'):\n  return test.get_config(variant)\n"
    "def sweep(add, study):\n"
    "  for seed in (0, 1):\n"
    "    add('a', seed, **{'seed': seed})\n"
    "    add('b', seed, compare='a', **{'seed': seed, 'stage2.unpaired_weight': 0.5})\n"
    "    add('c', seed, 'cvae', reference=f'a_s{seed}')\n"
  )
  return study.load_module(str(path))


def test_a_failed_run_is_recorded_and_the_study_goes_on(tmp_path, monkeypatch):
  module = _fake_module(tmp_path)
  calls, failed_once = [], set()

  def fake(run, config, wd, s):
    calls.append(run.name)
    if run.name == "b_s1" and run.name not in failed_once:
      failed_once.add(run.name)
      raise FloatingPointError("stage2: non-finite loss\nin step 3")
    if run.kind == "cvae":
      s.finished_dir(run.options["reference"])
    return [kinds.row(run, "", {"fd": 10.0 + run.seed + (run.setting == "b"), "accuracy": 0.9})]

  monkeypatch.setattr(kinds, "KINDS", dict.fromkeys(kinds.KINDS, fake))
  out = tmp_path / "out"
  text = study.Study(module, study.plan(module, "x"), out).run()
  rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
  assert [r["status"] for r in rows] == ["ok", "ok", "ok", "ok", "failed", "ok"]
  assert rows[4]["error"] == "FloatingPointError: stage2: non-finite loss in step 3"
  assert "| b | 1/2 | 11.00 |" in text and "+1.00 (vs a)" in text
  assert "## Failed or pending runs" in text and (out / "report.md").read_text() == text
  calls.clear()  # A rerun retries only the failed run.
  study.Study(module, study.plan(module, "x"), out).run()
  assert calls == ["b_s1"] and not (out / "runs" / "b_s1" / "failed.json").exists()
  assert (
    "| b | 2/2 | 11.50 ± 0.71 | 0.900 ± 0.000 | +1.00 ± 0.00 (vs a) |"
    in (out / "report.md").read_text()
  )


def test_only_runs_the_selected_runs_and_a_baseline_needs_its_reference(tmp_path, monkeypatch):
  module = _fake_module(tmp_path)
  calls = []

  def fake(run, config, wd, s):
    calls.append(run.name)
    if run.kind == "cvae":
      s.finished_dir(run.options["reference"])
    return [kinds.row(run, "", {"fd": 1.0})]

  monkeypatch.setattr(kinds, "KINDS", dict.fromkeys(kinds.KINDS, fake))
  s = study.Study(module, study.plan(module, "x"), tmp_path / "out")
  s.run(only="_s1$")
  assert calls == ["a_s1", "b_s1", "c_s1"]
  calls.clear()
  s.run(only="^c_")
  assert calls == ["c_s0"]
  assert (
    "has not finished" in json.loads((tmp_path / "out/runs/c_s0/failed.json").read_text())["error"]
  )
  assert s.state("c_s1") == "done" and s.state("a_s0") == "todo"


def _env(cache_dir) -> dict:
  keep = ("JAX_NUMPY_RANK_PROMOTION",)
  env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "XLA_")) or k in keep}
  env.update(
    JAX_PLATFORMS="cpu",
    PYTHONPATH=str(ROOT),
    JAX_COMPILATION_CACHE_DIR=str(cache_dir),
    JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
    JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
    XLA_FLAGS="--xla_backend_optimization_level=0",
  )
  return env


def _study(tmp_path, *flags, config="test.py", which="unpaired"):
  cmd = [sys.executable, "-m", "experiments.study", f"--config=experiments/configs/{config}"]
  cmd += [f"--study={which}", f"--out={tmp_path / 'out'}", *flags]
  return subprocess.run(
    cmd, cwd=ROOT, env=_env(tmp_path / "cache"), capture_output=True, text=True, timeout=900
  )


def test_bad_flags_are_one_line_errors_and_run_nothing(tmp_path):
  # One process per flag costs seconds each: the two paths of the command line, an
  # unknown field (the flag parser) and a bad --only (the runner); the others are checked
  # in-process above and in tests/cli_test.py.
  for flags, why in (
    (["--config.stage2.stepz=1"], "stage2.stepz"),
    (["--only=("], "is not a regular expression"),
  ):
    r = _study(tmp_path, *flags)
    assert r.returncode == 2 and why in r.stderr, r.stderr
    assert len([line for line in r.stderr.splitlines() if line.startswith("error:")]) == 1
  assert not (tmp_path / "out" / "runs").exists()


def test_list_prints_every_run_and_its_state(tmp_path):
  r = _study(tmp_path, "--list", config="mnist5k_classcond.py", which="quick")
  assert r.returncode == 0, r.stderr
  assert "16 runs" in r.stdout and "latent_diffusion_p500_s1" in r.stdout and "todo" in r.stdout


# --------------------------------------------------------------------------- end to end


def _finite(value) -> bool:
  return isinstance(value, int | float) and math.isfinite(value)


def _files(root):
  return {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("study")
  first = _study(tmp)
  assert first.returncode == 0, first.stderr[-4000:]
  before = _files(tmp / "out" / "runs")
  second = _study(tmp)
  assert second.returncode == 0, second.stderr[-4000:]
  rows = [json.loads(line) for line in (tmp / "out/results.jsonl").read_text().splitlines()]
  return tmp / "out", first, second, before, rows


@pytest.mark.slow
def test_tiny_unpaired_study_end_to_end(tiny):
  import lsdm_jax

  out, first, second, before, rows = tiny
  assert {r["kind"] for r in rows} == {"lsdm", "latent_diffusion", "pixel_wgcs", "cvae"}
  for r in rows:
    assert r["status"] == "ok", r
    for key in ("fd", "accuracy", "precision", "recall", "generate_seconds_per_1000"):
      assert _finite(r["metrics"][key]), (r["name"], key)
    if r["kind"] == "lsdm":
      assert _finite(r["metrics"]["bound_value"]) and _finite(r["metrics"]["pca_fd_ratio"])
  ldm = [r for r in rows if r["kind"] == "latent_diffusion"]
  assert sum(bool(r.get("closest_to_reference_fd")) for r in ldm) == 1
  m = ldm[0]["metrics"]
  assert m["speed_ratio"] == pytest.approx(
    m["generate_seconds_per_1000"] / m["reference_generate_seconds_per_1000"]
  )
  text = (out / "report.md").read_text()
  for heading in ("## Methods", "## Error-bound terms", "## One step against many"):
    assert heading in text
  assert text in first.stdout and "Failed or pending" not in text
  for name in ("fd_vs_unpaired.png", "precision_vs_unpaired.png"):
    assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  # The marginal-matching run reused its paper run's stage 1, trained nowhere else.
  ext = next(r for r in rows if r["setting"] == "lsdm_critic_p100_u300_w0.5")
  assert ext["stage1_source"] == "lsdm_critic_p100_u300_w0_s0"
  a = lsdm_jax.load(out / "runs" / ext["run"]).ae_params
  jax.tree.map(
    np.testing.assert_array_equal, a, lsdm_jax.load(out / "runs" / ext["stage1_source"]).ae_params
  )
  # The rerun skipped every run and rewrote none of their files.
  assert "stage1 step" not in second.stderr and _files(out / "runs") == before


@pytest.mark.slow
def test_tiny_semi_study_end_to_end(tmp_path):
  r = _study(tmp_path, which="semi")
  assert r.returncode == 0, r.stderr[-4000:]
  rows = [json.loads(line) for line in (tmp_path / "out/results.jsonl").read_text().splitlines()]
  assert all(r["status"] == "ok" for r in rows), [r for r in rows if r["status"] != "ok"]
  settings = {r["setting"] for r in rows}
  assert {"paper", "semi", "oracle", "ld_pseudo_cd1", "labellers_knn"} <= settings
  text = (tmp_path / "out/report.md").read_text()
  assert "## Semi-supervised pseudo-labels" in text and "## Labellers" in text
  assert (tmp_path / "out/labellers.png").exists()
