"""Tests of the PNG writers: grids, training curves and line plots."""

from __future__ import annotations

import numpy as np
from PIL import Image

from lsdm_jax import plots


def test_save_grid_shape(tmp_path):
  images = np.random.default_rng(0).uniform(size=(6, 4, 4, 1)).astype(np.float32)
  grid = plots.save_grid(images, 2, tmp_path / "grid.png", scale=1)
  assert (tmp_path / "grid.png").exists()
  with Image.open(tmp_path / "grid.png") as png:
    assert grid.shape[:2] == png.size[::-1]


def test_save_lines_with_and_without_error_bars(tmp_path):
  lines = {"a": ([0, 1, 2], [1.0, 2.0, 1.5], [0.1, 0.0, 0.2]), "b": ([0, 1, 2], [2.0, 1.0, 0.5])}
  path = plots.save_lines(lines, tmp_path / "sub" / "lines.png", "x", "y", "title")
  assert path == tmp_path / "sub" / "lines.png"
  with Image.open(path) as png:
    assert png.size == (600, 400)
