"""Flax parameters as a small, checksummed .npz: the file format of the shipped feature nets.

The file is a plain zip of `.npy` entries (`params/<module>/<name>` and a JSON `meta`),
readable by `np.load(..., allow_pickle=False)`. Its entries carry a fixed date and no
compression, so the same weights always make byte-identical files with the same sha256.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pathlib
import zipfile
from collections.abc import Callable
from typing import Any

import numpy as np
from flax import traverse_util

from lsdm_jax.errors import DataError

_PREFIX = "params/"
_FIXED_DATE = (1980, 1, 1, 0, 0, 0)


def write_params(
  path: str | os.PathLike, params: Any, meta: dict[str, Any], dtype: str = "float32"
) -> str:
  """Writes a nested parameter dict as `dtype` and `meta` as JSON, atomically.

  Args:
    path: the .npz to write (its directory must exist).
    params: nested dict of arrays (Flax `params`).
    meta: JSON-serialisable metadata.
    dtype: the stored type of every parameter ("float32", "float16").

  Returns:
    The file's sha256 (hex).
  """
  arrays = {
    _PREFIX + name: np.asarray(value, dtype)
    for name, value in traverse_util.flatten_dict(params, sep="/").items()
  }
  arrays["meta"] = np.array(json.dumps(meta, sort_keys=True))
  buffer = io.BytesIO()
  with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as zf:
    for name in sorted(arrays):
      entry = io.BytesIO()
      np.lib.format.write_array(entry, arrays[name], allow_pickle=False)
      zf.writestr(zipfile.ZipInfo(f"{name}.npy", date_time=_FIXED_DATE), entry.getvalue())
  data = buffer.getvalue()
  path = pathlib.Path(path)
  staging = path.with_name(f".{path.name}.tmp-{os.getpid()}")
  staging.write_bytes(data)
  os.replace(staging, path)
  return hashlib.sha256(data).hexdigest()


def read_params(
  path: str | os.PathLike, *, sha256: str | None, fix: str, what: str = "weights file"
) -> tuple[dict[str, Any], dict[str, Any]]:
  """Reads a file written by `write_params`, first checking its sha256 when one is given.

  Args:
    path: the .npz.
    sha256: the expected checksum (hex), or None to skip the check.
    fix: what the user should do, appended to any error message.
    what: what the file is, for the error messages.

  Returns:
    The nested parameter dict (float32 numpy arrays) and the metadata.

  Raises:
    DataError: (one line) the file is missing, has another sha256, is malformed, or holds
      non-finite values.
  """
  try:
    data = pathlib.Path(path).read_bytes()
  except OSError as e:
    raise DataError(f"{what} {path} cannot be read ({e.strerror}); {fix}") from e
  digest = hashlib.sha256(data).hexdigest()
  if sha256 is not None and digest != sha256:
    raise DataError(
      f"{what} {path} has sha256 {digest[:16]}... where {sha256[:16]}... is expected "
      f"(damaged or replaced); {fix}"
    )
  try:
    buffer = io.BytesIO(data)
    with np.load(buffer, allow_pickle=False) as npz:
      meta = json.loads(str(npz["meta"]))
      flat = {
        name.removeprefix(_PREFIX): np.asarray(npz[name], np.float32)
        for name in npz.files
        if name.startswith(_PREFIX)
      }
  except (ValueError, KeyError, OSError, zipfile.BadZipFile) as e:
    raise DataError(f"{what} {path} is malformed ({type(e).__name__}); {fix}") from e
  if not flat or not all(np.isfinite(value).all() for value in flat.values()):
    raise DataError(f"{what} {path} holds no parameters or non-finite ones; {fix}")
  return traverse_util.unflatten_dict(flat, sep="/"), meta


def convert_exported(path: str | os.PathLike, what: str, fix: str, convert: Callable) -> Any:
  """`convert(archive, source=...)` of a torch `state_dict` exported as `.npz` (the LPIPS
  and Inception weights files), every failure one `DataError` naming `what` and `fix`.

  Args:
    path: the `.npz` file.
    what: its name in messages, e.g. "LPIPS weights file".
    fix: what to do, appended to every message.
    convert: (Mapping of arrays, source=str) → params; may raise ValueError on bad keys.
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise DataError(f"{what} {path} does not exist; {fix}")
  try:
    archive = np.load(path, allow_pickle=False)
  except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
    raise DataError(f"{what} {path} is not an .npz ({e}); {fix}") from None
  if not isinstance(archive, np.lib.npyio.NpzFile):
    raise DataError(f"{what} {path} holds one array, not an .npz; {fix}")
  with archive:
    try:
      return convert(archive, source=f"{what} {path}")
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
      raise DataError(f"{what} {path} is unreadable ({e}); {fix}") from None
