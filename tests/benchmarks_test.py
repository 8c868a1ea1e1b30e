"""The benchmark scripts run and write their tables (tiny models, `--quick`, `--dry-run`)."""

import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

BENCHMARKS = pathlib.Path(__file__).resolve().parents[1] / "benchmarks"


def load(name: str):
  if str(BENCHMARKS) not in sys.path:  # As `python benchmarks/NAME.py` has it.
    sys.path.insert(0, str(BENCHMARKS))
  spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  sys.modules[name] = module  # Dataclasses look their module up there.
  spec.loader.exec_module(module)
  return module


def test_stage2_ab_quick_writes_a_row_per_variant(tmp_path):
  out = tmp_path / "ab.md"
  load("stage2_ab").main(["--quick", "--rounds=2", f"--out={out}"])
  text = out.read_text()
  rows = [line for line in text.splitlines() if line.startswith("| gp_stride")]
  assert len(rows) == 2, text
  assert "gp_stride=2 (default)" in rows[0] and "of 2 rounds" in rows[1]
  assert "--quick" in text


@pytest.mark.slow  # About a minute: three tiny configs, each stage compiled.
def test_scale_quick_writes_a_row_per_research_config(tmp_path):
  out = tmp_path / "scale.md"
  load("scale").main(["--quick", f"--out={out}"])
  rows = [line for line in out.read_text().splitlines() if ":tiny |" in line]
  assert [r.split(" | ")[0] for r in rows] == [
    "| cifar10_classcond:tiny",
    "| celeba64_attributes:tiny",
    "| celeba_superres:tiny",
  ]
  assert all("yes / yes" in r for r in rows)


def test_scale_counts_every_iteration_of_the_stage2_loops():
  """XLA's cost analysis counts one iteration of a loop: a compiled stage-2 step whose
  critic updates and fused generator updates are `lax.scan`s counts about one of each.
  `scale.stage2_flops` lowers the step with both scans unrolled and matches XLA's count of
  the compiled unrolled program (which XLA's own rewrites make a few percent larger)."""
  from lsdm_jax import parallel

  scale = load("scale")
  config, image_shape, classes, attributes = scale.research_config(
    "celeba64_attributes", "tiny", "float32", 1
  )
  config.stage2.n_critic, config.stage2.steps_per_call = 3, 2
  mesh = parallel.make_mesh(1, 1)
  model, *_ = scale.stage1_program(config, image_shape, mesh)
  rng = np.random.default_rng(0)
  program = scale.stage2_program(config, image_shape, classes, attributes, model, mesh, rng)
  corrected = scale.stage2_flops(program)

  def compiled_flops(unroll):
    program.s2.unroll = unroll
    step = program.s2.make_train_step(program.shardings, program.data_shardings)
    cost = step.lower(program.state, program.data).compile().cost_analysis()
    return (cost[0] if isinstance(cost, list) else cost)["flops"]

  unrolled, looped = compiled_flops(True), compiled_flops(False)
  assert corrected == pytest.approx(unrolled, rel=0.15)
  assert corrected > 2.5 * looped  # 2 x (3 critic updates + 1 generator update)


def test_input_quick_measures_grain_batches_beside_the_rate_an_h200_needs(tmp_path):
  out = tmp_path / "input.md"
  rows = load("input").main(["--quick", "--workers=0", "--only=cifar10", f"--out={out}"])
  assert [(r["config"], r["workers"]) for r in rows] == [("cifar10_classcond", 0)]
  row = rows[0]
  assert row["float"] > 0 and row["uint8"] > 0 and row["needed"] > 0
  assert row["stored"] == "32x32x3 PNG" and 500 < row["bytes"] < 32 * 32 * 3  # Compressed.
  assert "| cifar10_classcond | 32x32x3 PNG" in out.read_text()


def test_accelerator_report_is_one_table_and_fails_naming_a_failed_step(tmp_path):
  """The report of benchmarks/accelerator.sh: every step's rows in one table, a failed
  step named in it, and a non-zero exit."""
  accelerator = load("accelerator")
  device = {"jax": "0.0", "backend": "gpu", "device": "NVIDIA H200", "date": "2000-01-01"}
  (tmp_path / "device.json").write_text(json.dumps([device]))
  measured = {"config": "cifar10_classcond:default", "dtype": "bfloat16", "peak_flops": 1e15}
  for stage, flops in (("stage1", 5e12), ("stage2", 2e12)):
    measured.update({f"batch_{stage}": 128, f"flops_{stage}": flops, f"sec_{stage}": 0.02})
    measured[f"mem_{stage}"] = 1e10
  (tmp_path / "scale_cifar10_classcond.json").write_text(json.dumps([measured]))
  (tmp_path / "status.txt").write_text("device 0 exit 0\nmock 124 ran past its 170 s\n")
  out = tmp_path / "table.md"
  with pytest.raises(SystemExit, match="1 step"):
    accelerator.main(["report", f"--dir={tmp_path}", f"--out={out}"])
  text = out.read_text()
  assert "NVIDIA H200" in text and "JAX 0.0" in text and "2000-01-01" in text
  rows = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line]
  assert len(rows) == 4  # The header, two scale rows, the failed step.
  assert "| 25% |" in rows[1]  # 5 TFLOP in 0.02 s of 1,000 TFLOP/s.
  assert rows[3].startswith("| mock |") and "FAILED: ran past its 170 s" in rows[3]


@pytest.mark.slow  # 4-5 minutes: three processes compile the tiny configs.
def test_accelerator_dry_run_runs_every_step_at_tiny_sizes(tmp_path):
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # One CPU device.
  env.update(PYTHON=sys.executable, OUT=str(tmp_path))
  done = subprocess.run(
    ["bash", str(BENCHMARKS / "accelerator.sh"), "--dry-run"],
    env=env,
    capture_output=True,
    text=True,
    timeout=1500,
  )
  assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
  text = (tmp_path / "scale_gpu.md").read_text()
  for what in ("scale.py, stage-1 step", "mock run, stage2", "generate on device"):
    assert what in text
  assert "FAILED" not in text and text.count("finite losses") == 2
  assert (tmp_path / "accelerator.log").exists()
