"""PNG output a person can look at: sample grids and training curves."""

from __future__ import annotations

import os
import pathlib

import numpy as np


def image_grid(images: np.ndarray, rows: int, pad: int = 1) -> np.ndarray:
  """(rows·cols, H, W, C) in [0, 1] → one (rows·(H+pad), cols·(W+pad), C) mosaic."""
  n, h, w, c = images.shape
  cols = -(-n // rows)
  grid = np.ones((rows * (h + pad) + pad, cols * (w + pad) + pad, c), np.float32)
  for i in range(n):
    r, k = divmod(i, cols)
    grid[
      pad + r * (h + pad) : pad + r * (h + pad) + h, pad + k * (w + pad) : pad + k * (w + pad) + w
    ] = images[i]
  return grid


def save_grid(images: np.ndarray, rows: int, path: str | os.PathLike, scale: int = 2) -> np.ndarray:
  """Writes a grid of images to a PNG (grayscale or RGB), enlarged `scale` times.

  Returns:
    The grid at its own size, (H', W', C) float32 in [0, 1] (for TensorBoard).
  """
  from matplotlib import image as mpimg

  grid = np.clip(image_grid(images, rows), 0.0, 1.0)
  big = grid.repeat(scale, axis=0).repeat(scale, axis=1)
  pathlib.Path(path).parent.mkdir(parents=True, exist_ok=True)
  if big.shape[-1] == 1:
    mpimg.imsave(path, big[..., 0], cmap="gray", vmin=0.0, vmax=1.0)
  else:
    mpimg.imsave(path, big)
  return grid


def save_curves(history: list[dict[str, float]], path: str | os.PathLike, title: str) -> None:
  """One panel per logged quantity against the step."""
  # A Figure of its own (no pyplot): no global backend switch, nothing left open.
  from matplotlib.figure import Figure

  keys = [k for k in history[0] if k not in ("step",)] if history else []
  if not keys:
    return
  steps = [h["step"] for h in history]
  cols = min(3, len(keys))
  rows = -(-len(keys) // cols)
  fig = Figure(figsize=(4 * cols, 2.6 * rows))
  axes = fig.subplots(rows, cols, squeeze=False)
  for ax, k in zip(axes.flat, keys, strict=False):
    ax.plot(steps, [h.get(k, np.nan) for h in history])
    ax.set_title(k, fontsize=9)
    ax.set_xlabel("step", fontsize=8)
    ax.tick_params(labelsize=7)
  for ax in list(axes.flat)[len(keys) :]:
    ax.axis("off")
  fig.suptitle(title)
  fig.tight_layout()
  pathlib.Path(path).parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(path, dpi=90)


def save_lines(
  lines: dict, path: str | os.PathLike, xlabel: str, ylabel: str, title: str = ""
) -> pathlib.Path:
  """One line per label: `lines[label] = (xs, ys)` or `(xs, ys, yerr)` (error bars)."""
  from matplotlib.figure import Figure

  fig = Figure(figsize=(6, 4))
  ax = fig.subplots()
  for label, (xs, ys, *err) in lines.items():
    if err:
      ax.errorbar(xs, ys, yerr=err[0], marker="o", capsize=3, label=label)
    else:
      ax.plot(xs, ys, label=label)
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  ax.set_title(title, fontsize=9)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7)
  fig.tight_layout()
  pathlib.Path(path).parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(path, dpi=100)
  return pathlib.Path(path)
