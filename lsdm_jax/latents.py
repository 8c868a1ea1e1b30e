"""Encode with the trained E and carry the latents to stage 2 through Orbax.

`workdir/latents/` holds the paired conditions `x` and codes `z`, the codes of the
unpaired images `z_unpaired` (used only by the optional marginal term of stage 2), and
per-dimension `mean`/`std` of all stage-1 training codes. Stage 2 works on standardised
codes (z − mean) / std, and generation maps back before decoding.

Arrays are saved as global `jax.Array`s sharded over the `data` axis, so each process
writes and reads only its own rows. Row counts are padded to a multiple of the data
axis; `meta['n_paired']` and `meta['n_unpaired']` hold the true counts.
"""

from __future__ import annotations

import json
import pathlib

import jax
import numpy as np
import orbax.checkpoint as ocp

from lsdm_jax import parallel
from lsdm_jax.data.sources import to_float
from lsdm_jax.errors import CheckpointError
from lsdm_jax.models.autoencoder import Autoencoder, encode_mean


def make_encode_fn(model: Autoencoder, mesh):
  """Jitted (params, images (B,H,W,C) in [0,1]) → z (B, d), sharded over `data`."""
  return jax.jit(
    lambda params, y: encode_mean(model, params, y),
    in_shardings=(parallel.replicated(mesh), parallel.data_sharding(mesh)),
    out_shardings=parallel.data_sharding(mesh),
  )


def encode(model: Autoencoder, params, images: np.ndarray, mesh, chunk: int = 1024) -> np.ndarray:
  """Codes of (N, H, W, C) images, computed in padded chunks; returns (N, d) float32."""
  fn = make_encode_fn(model, mesh)
  d = mesh.shape[parallel.DATA]
  chunk = max(d, chunk - chunk % d)
  out = []
  for start in range(0, len(images), chunk):
    y = to_float(images[start : start + chunk])
    n = len(y)
    pad = (-n) % d
    if pad:
      y = np.concatenate([y, np.zeros((pad, *y.shape[1:]), y.dtype)])
    z = fn(params, jax.device_put(y, parallel.data_sharding(mesh)))
    out.append(np.asarray(jax.device_get(z))[:n])
  return np.concatenate(out).astype(np.float32)


def _pad_rows(a: np.ndarray, multiple: int) -> np.ndarray:
  pad = (-len(a)) % multiple
  if not pad:
    return a
  return np.concatenate([a, np.repeat(a[-1:], pad, axis=0)])


def save(
  directory,
  mesh,
  *,
  x: np.ndarray,
  z: np.ndarray,
  z_unpaired: np.ndarray,
  mean: np.ndarray,
  std: np.ndarray,
  meta: dict,
) -> None:
  """Writes the latents (sharded over `data`) and their JSON meta, atomically."""
  d = mesh.shape[parallel.DATA]
  shard = parallel.data_sharding(mesh)
  rep = parallel.replicated(mesh)
  if len(z_unpaired) == 0:
    z_unpaired = np.zeros((1, z.shape[1]), np.float32)  # Orbax cannot save empty arrays.
  tree = {
    "x": jax.device_put(_pad_rows(x, d), shard),
    "z": jax.device_put(_pad_rows(z, d), shard),
    "z_unpaired": jax.device_put(_pad_rows(z_unpaired, d), shard),
    "mean": jax.device_put(mean.astype(np.float32), rep),
    "std": jax.device_put(std.astype(np.float32), rep),
  }
  meta = {
    **meta,
    "n_paired": len(x),
    "n_unpaired": int(meta.get("n_unpaired", 0)),
    "arrays": {k: [list(v.shape), str(v.dtype)] for k, v in tree.items()},
  }
  path = pathlib.Path(directory).absolute()
  with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as ckpt:
    ckpt.save(
      path,
      args=ocp.args.Composite(arrays=ocp.args.StandardSave(tree), meta=ocp.args.JsonSave(meta)),
      force=True,
    )


def read_meta(directory) -> dict | None:
  """The latents' meta, or None when there are none (or they are unreadable)."""
  path = pathlib.Path(directory) / "meta" / "metadata"
  try:
    return json.loads(path.read_text())
  except (OSError, ValueError):
    return None


def load(directory, mesh) -> tuple[dict[str, jax.Array], dict]:
  """Reads latents onto `mesh` (rows sharded over `data`); trims the padding.

  Returns:
    ({'x', 'z', 'z_unpaired', 'mean', 'std'}, meta).
  """
  path = pathlib.Path(directory).absolute()
  meta = read_meta(path)
  if meta is None:
    raise CheckpointError(f"no latents in {path}; run the pipeline (stage 1 writes them)")
  shard = parallel.data_sharding(mesh)
  rep = parallel.replicated(mesh)
  try:
    with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as ckpt:
      abstract = {
        k: jax.ShapeDtypeStruct(
          tuple(shape), np.dtype(dtype), sharding=rep if k in ("mean", "std") else shard
        )
        for k, (shape, dtype) in meta["arrays"].items()
      }
      tree = ckpt.restore(path, args=ocp.args.Composite(arrays=ocp.args.StandardRestore(abstract)))
  except Exception as e:  # noqa: BLE001 - Orbax raises many types on damaged files.
    raise CheckpointError(
      f"latents in {path} are unreadable ({type(e).__name__}); delete that directory and "
      "rerun to encode again"
    ) from e
  arrays = dict(tree["arrays"])
  arrays["x"] = arrays["x"][: meta["n_paired"]]
  arrays["z"] = arrays["z"][: meta["n_paired"]]
  arrays["z_unpaired"] = arrays["z_unpaired"][: max(1, meta["n_unpaired"])]
  return arrays, meta


def standardise(z: jax.Array, mean: jax.Array, std: jax.Array) -> jax.Array:
  return (z - mean) / std


def latent_stats(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Per-dimension mean and std (floored, so no dimension is divided by ~0)."""
  mean = codes.mean(axis=0)
  std = np.maximum(codes.std(axis=0), 1e-3 * max(float(codes.std()), 1e-6))
  return mean.astype(np.float32), std.astype(np.float32)


def unstandardise(z: jax.Array, mean: jax.Array, std: jax.Array) -> jax.Array:
  return z * std + mean


__all__ = ["encode", "latent_stats", "load", "read_meta", "save", "standardise", "unstandardise"]
