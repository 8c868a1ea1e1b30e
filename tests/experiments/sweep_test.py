"""`python -m experiments.sweep`: the whole sweep on tiny settings, and its failure handling.

The end-to-end tests (marked `slow`, so out of the default suite and CI: run them with
`pytest -m slow tests/experiments/sweep_test.py`) run `--tiny` twice in a subprocess (one
CPU device, XLA's backend optimisation level 0 and a persistent compilation cache, as
tests/experiments/main_test.py does; compilation is most of a tiny run): three LSDM runs
(n_unpaired 0 and 300, and one marginal-matching run that reuses a stage 1), latent
diffusion in that run's latent space, the pixel-space WGCS and the CVAE; about a minute
on 2 cores. The feature net comes from the session's cache (tests/conftest.py); where it
is not there yet, the first run trains it (~40 s more). The failure and --only tests
replace the jobs by stand-ins and stay in the default suite.
"""

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

from experiments import sweep, sweep_jobs, sweep_plan, sweep_report

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _env(cache_dir) -> dict:
  keep = ("JAX_NUMPY_RANK_PROMOTION",)  # CI's strictness applies to the sweep too.
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


def _sweep(out, cache_dir) -> subprocess.CompletedProcess:
  cmd = [sys.executable, "-m", "experiments.sweep", f"--out={out}", "--tiny"]
  r = subprocess.run(
    cmd, cwd=ROOT, env=_env(cache_dir), capture_output=True, text=True, timeout=900
  )
  assert r.returncode == 0, r.stderr[-4000:]
  return r


def _files(root: pathlib.Path) -> dict:
  return {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("sweep")
  out = tmp / "out"
  first = _sweep(out, tmp / "jax_cache")
  before = _files(out / "runs")
  second = _sweep(out, tmp / "jax_cache")
  rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
  return out, first, second, before, rows


def _finite(value) -> bool:
  return isinstance(value, int | float) and math.isfinite(value)


@pytest.mark.slow
def test_every_planned_run_and_method_has_a_finished_row(swept):
  _, _, _, _, rows = swept
  settings = sweep_plan.tiny_settings()
  expected = set()
  for job in sweep_plan.plan(settings):
    if job.kind == "latent_diffusion":
      expected |= {f"{job.name}_ddim{n}" for n in settings.ddim_steps}
    else:
      expected.add(job.name)
  assert {r["name"] for r in rows} == expected and len(rows) == len(expected)
  assert {r["method"] for r in rows} == set(sweep_plan.KINDS)
  for r in rows:
    assert r["status"] == "ok" and r["error"] is None, r
    m = r["metrics"]
    for key in ("fd", "accuracy", "precision", "recall", "generate_seconds_per_1000"):
      assert _finite(m[key]) and m[key] >= 0, (r["name"], key, m.get(key))
    if r["method"] == "lsdm":
      bound = {k: v for k, v in m.items() if k.startswith("bound_")}
      assert {"bound_value", "bound_latent_w1", "bound_lipschitz"} <= set(bound)
      assert all(_finite(v) for v in bound.values()), bound
      assert r["config"]["seed"] == r["config"]["data"]["split_seed"] == r["seed"]
      assert r["config"]["stage2"]["unpaired_weight"] == r["unpaired_weight"]
      assert _finite(r["timings"]["total_seconds"])
    else:
      assert _finite(r["timings"]["train_seconds"])


@pytest.mark.slow
def test_report_has_every_table_and_both_plots(swept):
  out, first, _, _, _ = swept
  text = (out / "sweep.md").read_text()
  for heading in (
    "## LSDM: paired and unpaired data",
    "## Marginal matching",
    "## Error-bound terms",
    "## Methods at 100 paired examples",
    "## One step against many",
  ):
    assert heading in text
  assert "Failed or pending" not in text
  assert "latent diffusion, DDIM 2 steps" in text and "CVAE" in text and "pixel WGCS" in text
  assert text in first.stdout  # Printed at the end too.
  for name in ("fd_vs_unpaired.png", "precision_vs_unpaired.png"):
    assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_reused_stage1_was_not_retrained(swept):
  import lsdm_jax

  out, _, _, _, rows = swept
  reused = next(r for r in rows if r["group"] == "extension")
  source = reused["stage1_source"]
  assert source == "lsdm_critic_p100_u300_w0_s0"
  runs = out / "runs"

  def stages(name):
    lines = (runs / name / "metrics.jsonl").read_text().splitlines()
    return {json.loads(line)["stage"] for line in lines}

  assert stages(reused["name"]) == {"stage2"}  # No stage-1 step ran there.
  assert stages(source) == {"stage1", "stage2"}
  a = lsdm_jax.load(runs / reused["name"]).ae_params
  b = lsdm_jax.load(runs / source).ae_params
  jax.tree.map(np.testing.assert_array_equal, a, b)


@pytest.mark.slow
def test_rerun_skips_every_job_and_rewrites_nothing(swept):
  out, _, second, before, _ = swept
  assert "0 job(s) run, 6 skipped" in second.stderr
  assert "stage1 step" not in second.stderr and "stage2 step" not in second.stderr
  assert _files(out / "runs") == before


@pytest.mark.slow
def test_speed_ratio_comes_from_the_measured_times(swept):
  out, _, _, _, rows = swept
  ldm = [r for r in rows if r["method"] == "latent_diffusion"]
  assert sum(bool(r["closest_to_reference_fd"]) for r in ldm) == 1
  lsdm = {r["name"]: r for r in rows if r["method"] == "lsdm"}
  for r in ldm:
    m = r["metrics"]
    assert m["generate_seconds_per_1000"] > 0 and m["reference_generate_seconds_per_1000"] > 0
    assert m["speed_ratio"] == pytest.approx(
      m["generate_seconds_per_1000"] / m["reference_generate_seconds_per_1000"]
    )
    assert m["reference_fd"] == lsdm[r["reference_run"]]["metrics"]["fd"]
    assert m["decode_seconds_per_1000"] > 0
    assert m["latent_speed_ratio"] == pytest.approx(
      sweep_jobs.latent_ratio(
        m["generate_seconds_per_1000"],
        m["reference_generate_seconds_per_1000"],
        m["decode_seconds_per_1000"],
      )
    )
  chosen = sweep_report.speed_rows(rows)
  ratio = float(np.mean([r["metrics"]["speed_ratio"] for r in chosen]))
  assert f"**Speed ratio: {ratio:.0f}x**" in (out / "sweep.md").read_text()


# --------------------------------------------------------------------------- failures


def _fake_settings():
  return sweep_plan.Settings(
    "fake",
    n_paired=(50,),
    n_unpaired=(0, 10),
    seeds=(0, 1),
    estimators=("critic",),
    extension=(("critic", 50),),
    baseline_n_paired=(50,),
    ddim_steps=(1, 4),
  )


def test_a_failed_job_is_recorded_and_the_sweep_goes_on(tmp_path, monkeypatch):
  s = _fake_settings()
  calls, failed_once = [], set()

  def fake_lsdm(job, settings, out):
    calls.append(job.name)
    if job.seed == 1 and job.unpaired_weight > 0 and job.name not in failed_once:
      failed_once.add(job.name)
      raise FloatingPointError("stage2: non-finite loss\nin step 3")
    fd = 10.0 + job.seed - job.n_unpaired / 10
    metrics = {"fd": fd, "accuracy": 0.9, "precision": 0.8, "recall": 0.5, "bound_value": 1.0}
    sweep_jobs.write_json(
      sweep_plan.run_dir(out, job.name) / "metrics.json", {**metrics, "timings": {}}
    )

  def fake_baseline(job, settings, out):
    calls.append(job.name)
    metrics = {"fd": 20.0, "accuracy": 0.5, "precision": 0.5, "recall": 0.5}
    rows = [sweep_jobs.base_row(job, settings, metrics=metrics)]
    sweep_jobs.write_json(sweep_plan.run_dir(out, job.name) / "metrics.json", {"rows": rows})

  def fake_ldm(job, settings, out):
    raise RuntimeError("no reference")

  runners = {"lsdm": fake_lsdm, "latent_diffusion": fake_ldm}
  runners |= {"pixel_wgcs": fake_baseline, "cvae": fake_baseline}
  monkeypatch.setattr(sweep_jobs, "RUNNERS", runners)
  text = sweep.run_sweep(s, tmp_path)
  rows = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
  failed = {r["name"]: r["error"] for r in rows if r["status"] == "failed"}
  assert failed == {
    "lsdm_critic_p50_u10_w0.5_s1": "FloatingPointError: stage2: non-finite loss in step 3",
    "latent_diffusion_p50_s0_ddim1": "RuntimeError: no reference",
    "latent_diffusion_p50_s0_ddim4": "RuntimeError: no reference",
    "latent_diffusion_p50_s1_ddim1": "RuntimeError: no reference",
    "latent_diffusion_p50_s1_ddim4": "RuntimeError: no reference",
  }
  assert len(rows) == 6 + 4 + 2 * 2 and "## Failed or pending runs" in text
  assert "lsdm_critic_p50_u10_w0.5_s1 | failed | FloatingPointError" in text
  assert "No latent-diffusion job finished" in text
  # A rerun retries only the failed jobs.
  calls.clear()
  sweep.run_sweep(s, tmp_path)
  assert calls == ["lsdm_critic_p50_u10_w0.5_s1"]
  assert not (sweep_plan.run_dir(tmp_path, calls[0]) / "failed.json").exists()


def test_only_runs_the_selected_jobs_and_reports_every_finished_one(tmp_path, monkeypatch):
  calls = []

  def fake_lsdm(job, settings, out):
    calls.append(job.name)
    metrics = {"fd": 10.0, "accuracy": 0.9, "precision": 0.8, "recall": 0.5, "timings": {}}
    sweep_jobs.write_json(sweep_plan.run_dir(out, job.name) / "metrics.json", metrics)

  monkeypatch.setattr(sweep_jobs, "RUNNERS", dict.fromkeys(sweep_jobs.RUNNERS, fake_lsdm))
  s = _fake_settings()
  sweep.run_sweep(s, tmp_path, only="^lsdm_.*_s1$")
  want = {j.name for j in sweep_plan.plan(s) if j.kind == "lsdm" and j.name.endswith("_s1")}
  assert len(want) == 3 and sorted(calls) == sorted(want)
  calls.clear()
  sweep.run_sweep(s, tmp_path, only="u10_w0_s")  # Two more; the _s1 one is finished.
  assert calls == ["lsdm_critic_p50_u10_w0_s0"]
  rows = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
  finished = {r["name"] for r in rows if r["status"] == "ok"}
  assert "lsdm_critic_p50_u10_w0_s0" in finished and "lsdm_critic_p50_u0_w0_s1" in finished
  assert "lsdm_critic_p50_u0_w0_s0" not in finished


def test_only_that_matches_no_job_is_a_one_line_error(tmp_path):
  cmd = [sys.executable, "-m", "experiments.sweep", f"--out={tmp_path}", "--quick"]
  for only, why in (("(", "is not a regular expression"), ("^nope$", "matches none")):
    r = subprocess.run(
      [*cmd, f"--only={only}"], cwd=ROOT, env=_env(tmp_path), capture_output=True, text=True
    )
    assert r.returncode == 2 and why in r.stderr, r.stderr
    assert len([line for line in r.stderr.splitlines() if line.startswith("error:")]) == 1
  assert not (tmp_path / "runs").exists()


def test_a_bad_set_is_a_one_line_error(tmp_path):
  cmd = [sys.executable, "-m", "experiments.sweep", f"--out={tmp_path}", "--quick"]
  for flag, why in (("--set=stage2.stepz=1", "use KEY=VALUE"), ("--diffusion_set=steps=x", "int")):
    r = subprocess.run([*cmd, flag], cwd=ROOT, env=_env(tmp_path), capture_output=True, text=True)
    assert r.returncode == 2 and why in r.stderr, r.stderr
    assert len([line for line in r.stderr.splitlines() if line.startswith("error:")]) == 1
  assert not (tmp_path / "runs").exists()
