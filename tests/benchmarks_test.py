"""The interleaved stage-2 benchmark runs and writes its table (tiny models, `--quick`)."""

import importlib.util
import pathlib
import sys

import pytest

BENCHMARKS = pathlib.Path(__file__).resolve().parents[1] / "benchmarks"


def load(name: str):
  if str(BENCHMARKS) not in sys.path:  # As `python benchmarks/NAME.py` has it.
    sys.path.insert(0, str(BENCHMARKS))
  spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
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
