"""`python -m experiments.generate`: bad input is one line and exit 2; flags stay importable.

The export itself (superres `images`, `inputs`, `indices`) is tested against a trained run
in tests/train_superres_test.py.
"""

import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _run(*args):
  return subprocess.run(
    [sys.executable, "-m", "experiments.generate", *args],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=120,
    env={"JAX_PLATFORMS": "cpu", "PATH": "/usr/bin:/bin"},
  )


def test_missing_workdir_is_one_line_and_exit_2(tmp_path):
  out = tmp_path / "x.npz"
  r = _run(f"--workdir={tmp_path / 'nope'}", f"--out={out}")
  assert r.returncode == 2, r.stderr
  lines = [line for line in r.stderr.splitlines() if line.startswith("error:")]
  assert len(lines) == 1 and "config.json" in lines[0] and "Traceback" not in r.stderr
  assert not out.exists()


def test_bad_flag_is_one_line_and_exit_2(tmp_path):
  r = _run(f"--workdir={tmp_path}", "--out=x.npz", "--split=validation")
  assert r.returncode == 2 and r.stderr.strip().startswith("error:"), r.stderr


def test_modules_import_together():
  """Flags are defined only under __main__, so both tools import in one process."""
  from experiments import evaluate, generate, study

  assert callable(generate.export) and callable(evaluate.main) and callable(study.main)
