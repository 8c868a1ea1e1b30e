"""Tests for the checksummed parameter file: round trip, byte-identical rewrites, errors."""

import hashlib
import zipfile

import numpy as np
import pytest

from lsdm_jax.errors import DataError
from lsdm_jax.metrics.params_file import read_params, write_params

FIX = "rerun the export"


@pytest.fixture
def params():
  rng = np.random.default_rng(0)
  return {
    "Conv_0": {"kernel": rng.normal(size=(3, 3, 1, 4)).astype(np.float32), "bias": np.ones(4)},
    "Dense_0": {"kernel": rng.normal(size=(4, 2)).astype(np.float32)},
  }


def _equal_trees(a, b):
  assert a.keys() == b.keys()
  for name in a:
    if isinstance(a[name], dict):
      _equal_trees(a[name], b[name])
    else:
      np.testing.assert_array_equal(np.asarray(a[name], np.float32), b[name])
      assert b[name].dtype == np.float32


def test_round_trip_and_checksum(params, tmp_path):
  path = tmp_path / "net.npz"
  sha = write_params(path, params, {"version": "v9", "recipe": {"steps": 3}})
  assert sha == hashlib.sha256(path.read_bytes()).hexdigest()
  restored, meta = read_params(path, sha256=sha, fix=FIX)
  _equal_trees(params, restored)
  assert meta == {"version": "v9", "recipe": {"steps": 3}}
  # A plain numpy .npz, readable without pickle.
  with np.load(path, allow_pickle=False) as npz:
    assert sorted(npz.files) == [
      "meta",
      "params/Conv_0/bias",
      "params/Conv_0/kernel",
      "params/Dense_0/kernel",
    ]


def test_same_weights_make_the_same_file(params, tmp_path):
  a = write_params(tmp_path / "a.npz", params, {"x": 1})
  b = write_params(tmp_path / "b.npz", params, {"x": 1})
  assert a == b
  params["Dense_0"]["kernel"][0, 0] += 1e-6
  assert write_params(tmp_path / "c.npz", params, {"x": 1}) != a


def test_float16_storage_rounds_and_halves_the_file(params, tmp_path):
  write_params(tmp_path / "f32.npz", params, {})
  write_params(tmp_path / "f16.npz", params, {}, dtype="float16")
  restored, _ = read_params(tmp_path / "f16.npz", sha256=None, fix=FIX)
  kernel = params["Conv_0"]["kernel"]
  np.testing.assert_array_equal(restored["Conv_0"]["kernel"], kernel.astype(np.float16))
  assert restored["Conv_0"]["kernel"].dtype == np.float32
  f32 = sum(i.file_size for i in zipfile.ZipFile(tmp_path / "f32.npz").infolist())
  f16 = sum(i.file_size for i in zipfile.ZipFile(tmp_path / "f16.npz").infolist())
  assert f16 < f32


def _one_line_error(path, sha256, match):
  with pytest.raises(DataError, match=match) as info:
    read_params(path, sha256=sha256, fix=FIX)
  message = str(info.value)
  assert "\n" not in message and message.endswith(FIX)


def test_damaged_files_are_one_line_data_errors(params, tmp_path):
  path = tmp_path / "net.npz"
  sha = write_params(path, params, {})
  data = bytearray(path.read_bytes())
  data[len(data) // 2] ^= 0xFF
  path.write_bytes(bytes(data))
  _one_line_error(path, sha, "sha256")
  _one_line_error(path, None, "malformed")  # Unchecked, the flipped byte still shows.
  path.write_bytes(bytes(data[:100]))
  _one_line_error(path, None, "malformed")
  _one_line_error(tmp_path / "missing.npz", sha, "cannot be read")


def test_non_finite_parameters_are_refused(params, tmp_path):
  params["Dense_0"]["kernel"][1, 1] = np.nan
  path = tmp_path / "net.npz"
  write_params(path, params, {})
  _one_line_error(path, None, "non-finite")
