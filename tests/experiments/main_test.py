"""End-to-end reliability of `python -m experiments.main`.

* Bad input of every kind (flags, config files and values, npz files, workdirs) ends in
  one line `error: ...` on stderr, exit code 2, no traceback, and an untouched workdir.
  Most cases run in one interpreter (tests/experiments/cli_driver.py); a few run as real
  commands.
* Training killed with SIGKILL at a random step, in stage 1 and then in stage 2, and
  rerun with the same command ends with exactly the parameters of an uninterrupted run,
  also when the newest checkpoint was then truncated.
* A NaN stops a stage naming it and the step, keeping the earlier checkpoints; rerunning
  with skip_nonfinite=True resumes and finishes; a rerun of a finished run skips every
  stage and rewrites nothing.
* The TensorBoard events of a run hold the scalars of metrics.jsonl and the sample grids.

The training subprocesses use 2 CPU devices, XLA's backend optimisation level 0 and a
shared persistent compilation cache: the first run compiles, the others load, which
keeps these tests to seconds. Exactness does not depend on those settings, only on
every run using the same ones.
"""

from __future__ import annotations

import json
import os
import pathlib
import random
import re
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from PIL import Image

from experiments.configs import test as test_config
from lsdm_jax import summaries
from lsdm_jax import workdir as workdir_lib

ROOT = pathlib.Path(__file__).resolve().parents[2]
DRIVER = pathlib.Path(__file__).with_name("cli_driver.py")
CONFIG = f"--config={ROOT / 'experiments' / 'configs' / 'test.py'}"
TIMEOUT = 240  # Seconds; a hung run is killed (JAX catches SIGTERM, so SIGKILL).
STAGES = ("stage1", "latents", "stage2")

# The test config, smaller still: a few seconds per stage even without the compile cache.
TINY = [
  "--config.data.n_paired=20",
  "--config.data.n_unpaired=40",
  "--config.stage1.features=(4,8)",
  "--config.stage1.hidden=16",
  "--config.stage1.latent_dim=4",
  "--config.stage1.batch_size=8",
  "--config.stage1.steps=12",
  "--config.stage1.warmup_steps=2",
  "--config.stage1.log_every=1",
  "--config.stage1.save_every=2",
  "--config.stage1.keep=3",
  "--config.stage2.hidden=(16,16)",
  "--config.stage2.critic_hidden=(16,16)",
  "--config.stage2.cond_features=8",
  "--config.stage2.noise_dim=4",
  "--config.stage2.batch_size=16",
  "--config.stage2.steps=12",
  "--config.stage2.steps_per_call=2",
  "--config.stage2.log_every=2",
  "--config.stage2.save_every=4",
  "--config.stage2.keep=2",
  "--config.stage2.n_critic=1",
  "--config.eval.enabled=False",
  "--config.eval.grid_per_class=1",
]


def tree_hash(root) -> str:
  sys.path.insert(0, str(DRIVER.parent))
  try:
    import cli_driver
  finally:
    sys.path.pop(0)
  return cli_driver.tree_hash(root)


def _env(cache_dir=None, devices: int = 1) -> dict:
  env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "XLA_", "LSDM_TRACE"))}
  env.update(JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1", PYTHONPATH=str(ROOT))
  flags = f"--xla_force_host_platform_device_count={devices}"
  if cache_dir is not None:
    env.update(
      JAX_COMPILATION_CACHE_DIR=str(cache_dir),
      JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
      JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
    )
    flags += " --xla_backend_optimization_level=0"
  env["XLA_FLAGS"] = flags
  return env


def _command(workdir, *extra) -> list[str]:
  return [sys.executable, "-m", "experiments.main", CONFIG, f"--workdir={workdir}", *extra]


def _problems(result: dict) -> list[str]:
  """What is wrong with a case that should fail cleanly (empty if nothing)."""
  out = []
  if result["code"] != 2:
    out.append(f"exit code {result['code']}")
  lines = [line for line in result["stderr"].splitlines() if not re.match(r"^I\d{4} ", line)]
  if len(lines) != 1 or not lines[0].startswith("error: "):
    out.append(f"stderr is not one 'error:' line: {lines}")
  if "Traceback" in result["stderr"]:
    out.append("traceback")
  if result.get("before") != result.get("after"):
    out.append("the workdir changed")
  return out


class _Background:
  """A subprocess started now and waited for later (the tests overlap on two cores)."""

  def __init__(self, cmd: list[str], env: dict):
    self.proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stderr=subprocess.PIPE, text=True)

  def wait(self) -> tuple[int, str]:
    try:
      _, stderr = self.proc.communicate(timeout=TIMEOUT)
    finally:
      self.stop()
    return self.proc.returncode, stderr

  def stop(self) -> None:
    """Kills the process unless it has ended, waits for it and closes its pipe (a Popen
    dropped unwaited, or its pipe, is a ResourceWarning in whichever test runs then)."""
    self.proc.kill()  # JAX catches SIGTERM; a run that hangs is killed for good.
    self.proc.wait()
    self.proc.stderr.close()


class _Driver(_Background):
  """cli_driver.py running `cases` in one interpreter."""

  def __init__(self, cases: list[dict], directory, env: dict):
    self.cases_file = pathlib.Path(directory) / "cases.json"
    self.results_file = pathlib.Path(directory) / "results.json"
    self.cases_file.write_text(json.dumps(cases))
    super().__init__(
      [sys.executable, str(DRIVER), str(self.cases_file), str(self.results_file)], env
    )

  def results(self) -> list[dict]:
    code, stderr = self.wait()
    assert code == 0, stderr[-3000:]
    return json.loads(self.results_file.read_text())


@pytest.fixture(scope="module")
def compile_cache(tmp_path_factory):
  return tmp_path_factory.mktemp("xla_cache")


@pytest.fixture(scope="module", autouse=True)
def reference_run(tmp_path_factory, compile_cache):
  """An uninterrupted run of the tiny config, started with the module's first test so
  that it compiles (and fills the compilation cache) while the bad-input tests run."""
  workdir = tmp_path_factory.mktemp("reference")
  run = _Background(_command(workdir, *TINY), _env(compile_cache, 2))
  yield workdir, run
  run.stop()


@pytest.fixture(scope="module")
def reference(reference_run):
  workdir, run = reference_run
  code, stderr = run.wait()
  assert code == 0, stderr[-3000:]
  return workdir


# --------------------------------------------------------------------------- bad input


def _npz_cases(tmp_path) -> dict[str, str]:
  """Malformed npz files, each one defect away from `valid` (which passes setup)."""
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (100, 28, 28), dtype=np.uint8)
  labels = np.repeat(np.arange(10), 10).astype(np.int64)
  floats = images.astype(np.float32) / 255.0
  variants = {
    "valid": dict(images=images, labels=labels),
    "no_images_key": dict(pixels=images, labels=labels),
    "object_images": dict(images=np.array([images[0], "x"], dtype=object), labels=labels[:2]),
    "object_labels": dict(images=images, labels=labels.astype(object)),
    "int64_images": dict(images=images.astype(np.int64), labels=labels),
    "bool_images": dict(images=images > 128, labels=labels),
    "nan_images": dict(images=np.where(floats > 0.9, np.nan, floats), labels=labels),
    "inf_images": dict(images=np.where(floats > 0.9, np.inf, floats), labels=labels),
    "images_out_of_range": dict(images=floats * 2.0, labels=labels),
    "images_1d_rows": dict(images=images.reshape(100, -1), labels=labels),
    "images_5_channels": dict(images=np.repeat(images[..., None], 5, -1), labels=labels),
    "no_rows": dict(images=images[:0], labels=labels[:0]),
    "labels_too_short": dict(images=images, labels=labels[:-1]),
    "labels_2d": dict(images=images, labels=labels.reshape(10, 10)),
    "labels_fractional": dict(images=images, labels=labels + 0.5),
    "labels_nan": dict(images=images, labels=np.where(labels == 3, np.nan, labels)),
    "labels_negative": dict(images=images, labels=labels - 1),
    "labels_huge": dict(images=images, labels=labels * 10_000),
    "labels_text": dict(images=images, labels=labels.astype(str)),
    "labels_with_a_gap": dict(images=images, labels=np.where(labels == 3, 12, labels)),
    "one_class": dict(images=images, labels=np.zeros(100, np.int64)),
    "too_few_rows": dict(images=images[:30], labels=labels[:30] % 3),
    "image_size_not_divisible": dict(
      images=rng.integers(0, 256, (100, 30, 30), np.uint8), labels=labels
    ),
  }
  paths = {}
  tmp_path.mkdir()
  for name, arrays in variants.items():
    path = tmp_path / f"{name}.npz"
    np.savez(path, **arrays)
    paths[name] = str(path)
  (tmp_path / "text.npz").write_text("images,labels\n1,2\n")
  paths["not_a_zip"] = str(tmp_path / "text.npz")
  (tmp_path / "truncated.npz").write_bytes(pathlib.Path(paths["valid"]).read_bytes()[:5000])
  paths["truncated_zip"] = str(tmp_path / "truncated.npz")
  paths["missing_file"] = str(tmp_path / "nope.npz")
  return paths


CONFIG_CASES = {
  "unknown_field": ["--config.stage1.learning_rat=0.1"],
  "unknown_section": ["--config.optimizer.lr=0.1"],
  "field_below_a_leaf": ["--config.seed.value=1"],
  "not_an_int": ["--config.stage1.steps=ten"],
  "not_a_float": ["--config.stage2.learning_rate=fast"],
  "tuple_of_text": ["--config.stage2.hidden=(16,a)"],
  "negative_steps": ["--config.stage1.steps=-3"],
  "zero_batch": ["--config.stage2.batch_size=0"],
  "nan_learning_rate": ["--config.stage1.learning_rate=nan"],
  "negative_weight": ["--config.stage1.reg_weight=-1"],
  "negative_warmup": ["--config.stage1.warmup_steps=-1"],
  "b1_is_one": ["--config.stage2.b1=1.0"],
  "zero_width": ["--config.stage2.hidden=(16,0)"],
  "no_features": ["--config.stage1.features=()"],
  "unknown_estimator": ["--config.stage2.estimator=magic"],
  "unknown_regularizer": ["--config.stage1.regularizer=l7"],
  "unknown_decoder": ["--config.stage1.decoder=deconv"],
  "unknown_critic_activation": ["--config.stage2.critic_activation=tanh"],
  "zero_decoder_width": ["--config.stage1.decoder_widths=(64,0)"],
  "unknown_task": ["--config.task.name=inpainting"],
  "superres_factor_3": ["--config.task.name=superres", "--config.task.factor=3"],
  "unknown_source": ["--config.data.source=imagenet"],
  "empty_tfds_name": ["--config.data.source=tfds:"],
  "steps_not_a_multiple": ["--config.stage2.steps=21"],
  "zero_steps_per_call": ["--config.stage2.steps_per_call=0"],
  "gp_stride_not_a_divisor": ["--config.stage2.gp_stride=3"],
  "ema_decay_one": ["--config.stage2.ema_decay=1.0"],
  "stage2_seed_below_minus_one": ["--config.stage2.seed=-2"],
  "zero_save_every": ["--config.stage1.save_every=0"],
  "zero_keep": ["--config.stage2.keep=0"],
  "batch_not_divisible": ["--config.stage1.batch_size=33"],
  "mesh_too_big": ["--config.mesh.data=64"],
  "mesh_model_3": ["--config.mesh.model=3"],
  "too_many_features": ["--config.stage1.features=(4,8,16)"],  # 28 is not divisible by 8.
  "too_many_paired": ["--config.data.n_paired=5000"],
  "paired_plus_unpaired": ["--config.data.n_paired=2000", "--config.data.n_unpaired=3000"],
  "a_class_without_pairs": ["--config.data.n_paired=5"],
  "no_paired": ["--config.data.n_paired=0"],
  "semi_without_unpaired": ["--config.semi.enabled=True", "--config.data.n_unpaired=0"],
  "semi_class_without_pairs": ["--config.semi.enabled=True", "--config.data.n_paired=5"],
  "semi_unknown_labeller": ["--config.semi.enabled=True", "--config.semi.labeller=svm"],
  "semi_threshold_above_one": ["--config.semi.threshold=1.5"],
  "unexpected_argument": ["extra"],
  "unknown_flag": ["--epochs=3"],
}


def test_bad_input_fails_in_one_line_with_exit_2_and_leaves_the_workdir_alone(tmp_path):
  run = tmp_path / "run"
  workdir_lib.prepare(
    run, test_config.get_config()
  )  # A workdir holding a (fake) run of the test config.
  for name in ("stage1/10", "latents", "samples"):
    (run / name).mkdir(parents=True)
    (run / name / "data").write_text(name)
  (tmp_path / "bad_syntax.py").write_text("def get_config(:\n")
  (tmp_path / "raises.py").write_text("def get_config():\n  raise RuntimeError('boom')\n")
  (tmp_path / "a_file").write_text("not a directory")
  npz = _npz_cases(tmp_path / "npz")

  cases = []

  def add(name, argv, workdir=run, **kw):
    cases.append({"name": name, "argv": argv, "hash": str(workdir), **kw})

  for name, overrides in CONFIG_CASES.items():
    add(name, [CONFIG, f"--workdir={run}", *overrides])
  small = ["--config.data.n_paired=20", "--config.data.n_unpaired=20"]
  for name, path in npz.items():
    if name != "valid":
      add(f"npz_{name}", [CONFIG, f"--workdir={run}", f"--config.data.source=npz:{path}", *small])
  add("missing_config_file", [f"--config={tmp_path / 'nope.py'}", f"--workdir={run}"])
  celeba = f"--config={ROOT / 'experiments' / 'configs' / 'celeba_superres.py'}"
  no_data = f"--config.data.data_dir={tmp_path / 'no_tfds_data'}"
  add(
    "celeba_not_prepared",
    [celeba, f"--workdir={tmp_path / 'celeba'}", no_data, "--config.stage1.perceptual_weight=0"],
    tmp_path,
  )
  add("config_syntax_error", [f"--config={tmp_path / 'bad_syntax.py'}", f"--workdir={run}"])
  add("config_file_raises", [f"--config={tmp_path / 'raises.py'}", f"--workdir={run}"])
  add("missing_workdir_flag", [CONFIG])
  add("workdir_of_another_config", [CONFIG, f"--workdir={run}", "--config.seed=1"])
  add("workdir_is_a_file", [CONFIG, f"--workdir={tmp_path / 'a_file'}"], tmp_path / "a_file")
  add("workdir_under_a_file", [CONFIG, f"--workdir={tmp_path / 'a_file' / 'x'}"], tmp_path)
  fresh = tmp_path / "fresh"
  add("fresh_workdir_bad_value", [CONFIG, f"--workdir={fresh}", "--config.stage1.steps=-3"], fresh)
  add(
    "fresh_workdir_bad_npz",
    [CONFIG, f"--workdir={fresh}", f"--config.data.source=npz:{npz['nan_images']}"],
    fresh,
  )
  # Controls: the valid npz and the test config pass validation.
  cases.append(
    {
      "name": "control_valid_npz",
      "setup_only": True,
      "argv": [CONFIG, f"--workdir={run}", f"--config.data.source=npz:{npz['valid']}", *small],
    }
  )
  cases.append(
    {"name": "control_test_config", "setup_only": True, "argv": [CONFIG, f"--workdir={run}"]}
  )
  assert len(cases) >= 30 + 2

  results = {r["name"]: r for r in _Driver(cases, tmp_path, _env(devices=2)).results()}
  assert results.pop("control_valid_npz")["code"] == 0
  assert results.pop("control_test_config")["code"] == 0
  failures = {name: _problems(r) for name, r in results.items() if _problems(r)}
  assert not failures, json.dumps(
    {k: [v, results[k]["stderr"][-600:]] for k, v in failures.items()}, indent=1
  )
  assert not fresh.exists()
  messages = {name: r["stderr"].strip().splitlines()[-1] for name, r in results.items()}
  # Spot checks that the line names the problem.
  assert "unknown config field 'stage1.learning_rat'" in messages["unknown_field"]
  assert "did you mean stage1.learning_rate?" in messages["unknown_field"]
  assert "object arrays, which are refused" in messages["npz_object_images"]
  assert "NaN" in messages["npz_nan_images"]
  assert (
    "class(es) [3, 10, 11] of 0..12 have no paired example" in messages["npz_labels_with_a_gap"]
  )
  assert (
    "holds a run with a different config (seed: 0 there, 1 now)"
    in messages["workdir_of_another_config"]
  )
  assert "No such file or directory" in messages["missing_config_file"]
  assert "semi.enabled needs unpaired images" in messages["semi_without_unpaired"]
  assert "with no paired example" in messages["semi_class_without_pairs"]
  assert "semi.labeller='svm' is not one of" in messages["semi_unknown_labeller"]
  assert "stage1.decoder='deconv' is not one of" in messages["unknown_decoder"]
  assert "stage2.critic_activation='tanh' is not one of" in messages["unknown_critic_activation"]
  assert "'celeb_a' (train) is not prepared" in messages["celeba_not_prepared"]
  assert "tfds build celeb_a" in messages["celeba_not_prepared"]
  assert (
    "stage2.steps=21 must be a multiple of stage2.steps_per_call=5"
    in messages["steps_not_a_multiple"]
  )
  assert "stage2.gp_stride=3 must divide stage2.batch_size=" in messages["gp_stride_not_a_divisor"]
  assert "stage2.ema_decay=1.0 must be in [0, 1)" in messages["ema_decay_one"]
  assert "stage2.seed=-2 must be >= 0, or -1" in messages["stage2_seed_below_minus_one"]


def test_bad_input_as_real_commands(tmp_path):
  """The same promise through `python -m experiments.main` and absl's app.run."""
  workdir = tmp_path / "run"
  (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04 broken")
  commands = {
    "unknown field": _command(workdir, "--config.stage1.stepz=3"),
    "bad npz": _command(workdir, f"--config.data.source=npz:{tmp_path / 'bad.npz'}"),
    "bad value": _command(workdir, "--config.stage2.n_critic=0"),
  }
  runs = {name: _Background(cmd, _env()) for name, cmd in commands.items()}
  try:
    waited = {name: run.wait() for name, run in runs.items()}
  finally:
    for run in runs.values():
      run.stop()  # Also those a failed wait left running.
  for name, (code, stderr) in waited.items():
    result = {"code": code, "stderr": stderr}
    assert not _problems(result), (name, _problems(result), stderr[-2000:])
  assert not workdir.exists()


# --------------------------------------------------------------------------- resume


def _final_state(workdir, stage: str) -> dict:
  """The newest checkpoint's train state, as numpy arrays."""
  directory = pathlib.Path(workdir) / stage
  step = max(int(p.name) for p in directory.iterdir() if p.name.isdigit())
  path = directory / str(step) / "state"
  with ocp.StandardCheckpointer() as ckpt:
    meta = ckpt.metadata(path).item_metadata.tree
    target = jax.tree.map(lambda m: np.zeros(m.shape, m.dtype), meta)
    return ckpt.restore(path, target)


def _run_until(cmd, env, pattern: str | None, log) -> tuple[int, str]:
  """Runs `cmd`; with a pattern, SIGKILLs it as soon as a stderr line matches it."""
  proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stderr=subprocess.PIPE, text=True, bufsize=1)
  lines, deadline = [], time.monotonic() + TIMEOUT
  try:
    for line in proc.stderr:
      lines.append(line)
      if pattern and re.search(pattern, line):
        proc.send_signal(signal.SIGKILL)
        break
      assert time.monotonic() < deadline, "timed out"
    proc.wait(timeout=TIMEOUT)
  finally:
    proc.kill()
    proc.stderr.close()
  text = "".join(lines)
  log.append(text)
  return proc.returncode, text


@pytest.fixture(scope="module")
def nan_run(reference, compile_cache, tmp_path_factory):
  """The NaN scenario (see its test), started as soon as the compilation cache is full,
  to run beside the SIGKILL test."""
  tmp = tmp_path_factory.mktemp("nan")
  work = tmp / "run"
  base = [CONFIG, f"--workdir={work}", *TINY]
  skip1, skip2 = "--config.stage1.skip_nonfinite=True", "--config.stage2.skip_nonfinite=True"
  stage1_nan, stage2_nan = {"stage1_nan_step": 4}, {"stage2_nan": True}
  cases = [
    {"name": "stage1 nan", "argv": base, "inject": stage1_nan},
    {"name": "stage2 nan", "argv": [*base, skip1], "inject": {**stage1_nan, **stage2_nan}},
    {"name": "skip both", "argv": [*base, skip1, skip2], "inject": stage2_nan},
    # A field that does not change results may differ: no stage trains or encodes again.
    {
      "name": "rerun",
      "argv": [*base, skip1, skip2, "--config.stage1.log_every=3"],
      "hash": [str(work / d) for d in STAGES],
    },
  ]
  driver = _Driver(cases, tmp, _env(compile_cache, 2))
  yield work, driver
  driver.stop()


@pytest.mark.slow  # 30 s; exact resume from a middle checkpoint is also tested in
# research_configs_test and train_test.
def test_sigkill_at_a_random_step_of_each_stage_then_rerun_is_exact(
  reference, nan_run, compile_cache, tmp_path
):
  seed = random.randrange(1 << 30)
  rng = random.Random(seed)
  k1 = rng.randint(5, 11)  # Stage 1 has checkpoints every 2 steps up to here.
  k2 = rng.choice([2, 4, 6, 8, 10])
  env, cmd, log = _env(compile_cache, 2), _command(tmp_path, *TINY), []
  why = f"random seed {seed}: kill at stage1 step {k1}, stage2 step {k2}; logs: {log}"

  code, _ = _run_until(cmd, env, rf"stage1 step {k1}/12 ", log)
  assert code == -signal.SIGKILL, why
  steps = sorted(int(p.name) for p in (tmp_path / "stage1").iterdir() if p.name.isdigit())
  assert len(steps) >= 2 and steps[-1] <= k1 + 1, why
  # Damage the newest stage-1 checkpoint as a crash during its write could have.
  for f in (tmp_path / "stage1" / str(steps[-1]) / "state").rglob("*"):
    if f.is_file():
      f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])

  code, text = _run_until(cmd, env, rf"stage2 step {k2}/12 ", log)
  assert code == -signal.SIGKILL, why
  warnings = [line for line in text.splitlines() if line.startswith(("W", "E"))]
  assert len(warnings) == 1 and f"stage1 checkpoint at step {steps[-1]}" in warnings[0], why
  assert f"stage1: resuming from step {steps[-2]}" in text, why
  assert "Traceback" not in text, why
  latents_before = tree_hash(tmp_path / "latents")
  stage1_before = tree_hash(tmp_path / "stage1")

  code, text = _run_until(cmd, env, None, log)
  assert code == 0, why
  assert "stage1: finished at step 12 in an earlier run; skipping" in text, why
  assert re.search(r"stage2: resuming from step \d+", text) or "stage2 step 2/12" in text, why
  assert tree_hash(tmp_path / "latents") == latents_before, why  # Not encoded again.
  assert tree_hash(tmp_path / "stage1") == stage1_before, why
  assert "Traceback" not in text and not re.search(r"^[WE]\d{4} ", text, re.M), why

  for stage in ("stage1", "stage2"):
    got, want = _final_state(tmp_path, stage), _final_state(reference, stage)
    assert int(got["step"]) == 12
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), got, want)
  got = {p.name: p.read_bytes() for p in (tmp_path / "samples").iterdir()}
  assert got == {p.name: p.read_bytes() for p in (reference / "samples").iterdir()}


def test_nan_stops_each_stage_by_name_and_a_rerun_may_skip_it(nan_run):
  work, driver = nan_run
  results = driver.results()
  nan1, nan2, skipped, rerun = results

  assert not _problems({**nan1, "before": None, "after": None}), nan1["stderr"][-2000:]
  assert "error: stage1: non-finite loss, gradient or update in step 5 of 12" in nan1["stderr"]
  assert "--config.stage1.skip_nonfinite=True" in nan1["stderr"]

  skip_note = re.compile(r"^W.*stage1: skipped 1 non-finite step\(s\) .*\n", re.M)
  nan2_stderr = skip_note.sub("", nan2["stderr"])
  assert nan2_stderr != nan2["stderr"]  # Stage 1 skipped its NaN step, and said so.
  assert not _problems({**nan2, "stderr": nan2_stderr, "before": None, "after": None}), nan2_stderr
  assert "stage1: resuming from step 4" in nan2["stderr"]  # The last finite checkpoint.
  assert re.search(
    r"error: stage2: non-finite loss, gradient or update in step \d+ of 12", nan2["stderr"]
  )

  assert skipped["code"] == 0, skipped["stderr"][-3000:]
  assert "stage1: finished at step 12" in skipped["stderr"]
  assert "stage2: skipped" in skipped["stderr"] and "non-finite step(s)" in skipped["stderr"]

  assert rerun["code"] == 0, rerun["stderr"][-3000:]
  assert rerun["before"] == rerun["after"]  # Nothing trained, encoded or saved again.
  assert "stage1: finished at step 12" in rerun["stderr"]
  assert "stage2: finished at step 12" in rerun["stderr"]
  for stage in ("stage1", "stage2"):
    state = _final_state(work, stage)
    assert int(state["nonfinite"]) >= 1
    assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(state["params"]))


# --------------------------------------------------------------------------- outputs


def test_tensorboard_events_hold_the_logged_scalars_and_the_samples(reference):
  scalars, images = {}, {}
  for event in summaries.read_events(reference / "tensorboard"):
    for v in event.summary.value:
      if v.HasField("image"):
        images[v.tag] = (event.step, v.image.width, v.image.height)
      else:
        scalars.setdefault(v.tag, []).append((event.step, v.simple_value))
  want = {}
  for line in (reference / "metrics.jsonl").read_text().splitlines():
    d = json.loads(line)
    for k, v in d.items():
      if k not in ("stage", "step", "time"):
        want.setdefault(f"{d['stage']}/{k}", []).append((d["step"], np.float32(v)))
  assert [s for s, _ in want["stage1/steps_per_sec"]] == list(range(1, 13))
  assert [s for s, _ in want["stage2/steps_per_sec"]] == [2, 4, 6, 8, 10, 12]
  assert {t: v for t, v in scalars.items() if t.startswith("stage")} == want
  total = json.loads((reference / "metrics.json").read_text())["timings"]["total_seconds"]
  assert scalars["timings/total_seconds"] == [(12, np.float32(total))]
  # The PNGs are the same grids enlarged twice.
  for name in ("grid", "reconstructions"):
    step, width, height = images.pop(f"samples/{name}")
    with Image.open(reference / "samples" / f"{name}.png") as png:
      assert (step, (2 * width, 2 * height)) == (12, png.size)
  assert not images
