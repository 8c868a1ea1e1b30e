"""Runs many command lines of `experiments.main` in one interpreter, for main_test.py.

A fresh interpreter costs seconds of imports per command; this driver pays them once.
Each case is parsed and run as `app.run` would (`cli.parse_flags`, then `main.main`),
with the absl flags reset in between and file descriptor 2 captured, so what the case
prints on stderr and its exit code are what a user would see.

    python tests/experiments/cli_driver.py CASES.json RESULTS.json

CASES.json holds a list of {"name", "argv", "setup_only", "inject", "hash"}:
  argv: the arguments after the program name.
  setup_only: stop after `train.setup` (data and config validation); no training.
  inject: {"stage1_nan_step": k} puts a NaN into the stage-1 batch of step k (0-based);
    {"stage2_nan": true} puts a NaN into one paired latent seen by stage 2.
  hash: a directory (or a list of them) whose trees are hashed before and after the case.
RESULTS.json gets a list of {"name", "code", "stderr", "before", "after"}.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import tempfile
import traceback


def tree_hash(root) -> str:
  """A hash of every path, file content and mode under `root` (or of its absence)."""
  if isinstance(root, list):
    return hashlib.sha256(" ".join(tree_hash(r) for r in root).encode()).hexdigest()
  if not os.path.lexists(root):
    return "absent"
  h = hashlib.sha256()
  for dirpath, dirnames, filenames in sorted(os.walk(root)):
    dirnames.sort()
    for name in [*sorted(filenames), ""]:
      path = os.path.join(dirpath, name)
      h.update(path.encode() + oct(os.lstat(path).st_mode).encode())
      if name:
        with open(path, "rb") as f:
          h.update(f.read())
  return h.hexdigest()


@contextlib.contextmanager
def captured_stderr():
  """Everything written to file descriptor 2 inside the block, as `box['text']`."""
  box = {}
  sys.stderr.flush()
  saved = os.dup(2)
  with tempfile.TemporaryFile() as f:
    os.dup2(f.fileno(), 2)
    try:
      yield box
    finally:
      sys.stderr.flush()
      os.dup2(saved, 2)
      os.close(saved)
      f.seek(0)
      box["text"] = f.read().decode(errors="replace")


@contextlib.contextmanager
def injected(inject: dict | None):
  """NaNs through the data, so that the compiled programs stay those of a normal run."""
  if not inject:
    yield
    return
  import jax.numpy as jnp
  import numpy as np

  from lsdm_jax import latents, stage1
  from lsdm_jax.data import pipeline

  patches = []
  if "stage1_nan_step" in inject:
    current = {}
    batch_indices, read_batch = pipeline.batch_indices, stage1.read_batch

    def batch_indices_spy(n, batch_size, seed, step):
      current["step"] = step
      return batch_indices(n, batch_size, seed, step)

    def read_batch_nan(images, rows):
      out = np.array(read_batch(images, rows), np.float32)  # The embedded digits: float.
      if current.get("step") == inject["stage1_nan_step"]:
        out[0, 0, 0, 0] = np.nan
      return out

    patches += [
      (pipeline, "batch_indices", batch_indices_spy),
      (stage1, "read_batch", read_batch_nan),
    ]
  if inject.get("stage2_nan"):
    standardise, calls = latents.standardise, []

    def standardise_nan(z, mean, std):
      calls.append(1)
      out = standardise(z, mean, std)
      return out.at[0, 0].set(jnp.nan) if len(calls) == 1 else out  # 'z', not 'z_unpaired'.

    patches.append((latents, "standardise", standardise_nan))
  saved = [(module, name, getattr(module, name)) for module, name, _ in patches]
  for module, name, value in patches:
    setattr(module, name, value)
  try:
    yield
  finally:
    for module, name, value in saved:
      setattr(module, name, value)


def run_case(case: dict) -> dict:
  from absl import flags

  import experiments.main as entry
  from lsdm_jax import cli, train

  fv = flags.FLAGS
  for name in ("config", "workdir", "overwrite"):  # Those of experiments.main (not absl's).
    fv[name].unparse()
  for name in [n for n in fv if "." in n]:  # Config overrides register themselves per parse.
    delattr(fv, name)
  argv = ["experiments.main", *case["argv"]]
  sys.argv = list(argv)  # ml_collections reads the overrides from sys.argv.
  before = tree_hash(case["hash"]) if case.get("hash") else None
  code = 0
  with captured_stderr() as err, injected(case.get("inject")):
    try:
      rest = cli.parse_flags(argv)
      if fv["verbosity"].using_default_value:
        fv.verbosity = 0  # INFO, as app.run sets it after parsing.
      if case.get("setup_only"):
        train.setup(fv.config)
      else:
        entry.main(rest)
    except SystemExit as e:
      code = e.code if isinstance(e.code, int) else 1
    except BaseException:  # noqa: BLE001 - reported as a failed case, as Python would.
      traceback.print_exc()
      code = 1
  after = tree_hash(case["hash"]) if case.get("hash") else None
  return {
    "name": case["name"],
    "code": code,
    "stderr": err["text"],
    "before": before,
    "after": after,
  }


def main() -> None:
  cases_path, results_path = sys.argv[1:3]  # Each case replaces sys.argv.
  with open(cases_path) as f:
    cases = json.load(f)
  from absl import logging

  logging.use_absl_handler()
  results = [run_case(case) for case in cases]
  with open(results_path, "w") as f:
    json.dump(results, f)


if __name__ == "__main__":
  main()
