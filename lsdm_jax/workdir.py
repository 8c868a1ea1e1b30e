"""The work directory: its resolved config, and the checks that protect earlier runs.

A workdir belongs to one config. Rerunning the same command resumes; running another
config on it is refused unless `overwrite=True`, which then clears the old results.
"""

from __future__ import annotations

import json
import pathlib
import shutil
import tempfile

import ml_collections

from lsdm_jax import config as config_lib
from lsdm_jax.errors import WorkdirError

RESULTS = ("stage1", "latents", "stage2", "samples", "metrics.json", "curves")


def prepare(
  workdir: str | pathlib.Path, config: ml_collections.ConfigDict, *, overwrite: bool = False
) -> pathlib.Path:
  """Creates or checks the workdir and writes `config.json`.

  Raises:
    WorkdirError: unwritable, or holding a run of another config (without `overwrite`).
  """
  path = pathlib.Path(workdir)
  try:
    path.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
      pass
  except OSError as e:
    raise WorkdirError(
      f"cannot write to workdir {str(path)!r} ({e.strerror}); choose another "
      "--workdir or free space"
    ) from e
  resolved = json.loads(config_lib.to_json(config))
  saved_path = path / "config.json"
  if saved_path.exists():
    try:
      saved = json.loads(saved_path.read_text())
    except ValueError:
      saved = None
    if saved != resolved:
      if not overwrite:
        diff = _diff(saved or {}, resolved)
        raise WorkdirError(
          f"workdir {str(path)!r} holds a run with a different config ({diff}); pass "
          "--overwrite to replace it, or choose another --workdir"
        )
      for name in RESULTS:
        target = path / name
        if target.is_dir():
          shutil.rmtree(target)
        elif target.exists():
          target.unlink()
  tmp = saved_path.with_suffix(".json.tmp")
  tmp.write_text(json.dumps(resolved, indent=2, sort_keys=True))
  tmp.replace(saved_path)
  return path


def _diff(a: dict, b: dict, prefix: str = "") -> str:
  keys = sorted(set(a) | set(b))
  for k in keys:
    if a.get(k) != b.get(k):
      if isinstance(a.get(k), dict) and isinstance(b.get(k), dict):
        return _diff(a[k], b[k], f"{prefix}{k}.")
      return f"{prefix}{k}: {a.get(k)!r} there, {b.get(k)!r} now"
  return "unreadable config.json"


def load_config(workdir: str | pathlib.Path) -> ml_collections.ConfigDict:
  """The resolved config of a run, from its `config.json`."""
  path = pathlib.Path(workdir) / "config.json"
  if not path.exists():
    raise WorkdirError(f"{str(path)!r} not found: is {str(workdir)!r} an lsdm-jax run directory?")
  saved = json.loads(path.read_text())
  config = config_lib.base_config()
  config.update_from_flattened_dict(_flatten(saved))
  return config


def _flatten(d: dict, prefix: str = "") -> dict:
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(_flatten(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = tuple(v) if isinstance(v, list) else v
  return out
