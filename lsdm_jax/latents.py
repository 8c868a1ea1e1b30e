"""Encode with the trained E and carry the latents to stage 2 through Orbax.

`workdir/latents/` holds the paired conditions `x` and codes `z`, the codes of the
unpaired images `z_unpaired` (used only by the optional marginal term of stage 2), and
per-dimension `mean`/`std` of all stage-1 training codes. Stage 2 works on standardised
codes (z − mean) / std, and generation maps back before decoding.

Nothing here needs a whole set on one host: `encode` reads, on each process, only the
images of the rows its devices hold and leaves the codes where they were computed;
`latent_stats` reduces on the devices; `save` and `load` write and read global arrays
sharded over the `data` axis, each process its own rows. Row counts are padded to a
multiple of the data axis (by repeating the last row); `meta['n_paired']` and
`meta['n_unpaired']` hold the true counts.
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from lsdm_jax import config as config_lib
from lsdm_jax import parallel
from lsdm_jax.data.experiment import Experiment
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


def encode(
  model: Autoencoder,
  params,
  images: np.ndarray,
  mesh,
  *,
  rows: np.ndarray | None = None,
  chunk: int = 1024,
) -> jax.Array:
  """Codes E(y) of `images[rows]`, as a global array sharded over `data`.

  The result's row r lives on the devices of data shard r // (N'/D). Each jitted call
  encodes, for every shard, its next `chunk / D` rows, so each process reads (and
  converts to float) only the images of its own shards, and the codes stay on the
  devices that computed them: no host holds the whole set, in or out.

  Args:
    model: the stage-1 autoencoder.
    params: its parameters (replicated over `mesh`, or host arrays).
    images: (M, H, W, C) uint8 or float images; only the needed rows are read.
    mesh: device mesh.
    rows: which rows of `images` to encode, in order (default: all of them).
    chunk: rows per jitted call (rounded to a multiple of the data axis size).

  Returns:
    (N', d) float32, N' = `parallel.padded_size(N, mesh)`; rows N.. repeat row N − 1.
  """
  rows = np.arange(len(images)) if rows is None else np.asarray(rows)
  n = len(rows)
  if n == 0:
    raise ValueError("nothing to encode")
  fn = make_encode_fn(model, mesh)
  sharding = parallel.data_sharding(mesh)
  d = mesh.shape[parallel.DATA]
  per = parallel.padded_size(n, mesh) // d  # Rows per data shard.
  m = max(1, min(per, chunk // d))  # Rows per shard and call.
  local = parallel.process_rows(sharding, d * m)
  first = np.arange(d)[:, None] * per
  pieces: dict = {}
  for start in range(0, per, m):
    # Call rows: shard j's rows j·per + start + [0, m), clipped into the shard and the set.
    offset = np.minimum(start + np.arange(m), per - 1)
    idx = np.minimum(first + offset, n - 1).reshape(-1)
    y = parallel.global_batch(mesh, to_float(images[rows[idx[local]]]), d * m)
    z = fn(params, y)
    parallel.dispatch_barrier(z)
    for shard in z.addressable_shards:
      pieces.setdefault(shard.device, []).append(shard.data)
  width = z.shape[1]
  arrays = [jnp.concatenate(p)[:per] for p in pieces.values()]
  return jax.make_array_from_single_device_arrays((d * per, width), sharding, arrays)


def latent_stats(
  codes: jax.Array | np.ndarray | Sequence, counts: Sequence[int] | None = None
) -> tuple[jax.Array, jax.Array]:
  """Per-dimension mean and std (floored, so no dimension is divided by ~0).

  Args:
    codes: one (N, d) array, or a sequence of them (global arrays stay on device).
    counts: valid rows of each array (default: all rows); later rows are padding.

  Returns:
    (mean, std), each (d,) float32.
  """
  if hasattr(codes, "ndim"):
    codes = [codes]
  counts = [len(c) for c in codes] if counts is None else list(counts)
  parts = [(c, k) for c, k in zip(codes, counts, strict=True) if k > 0]

  def stats(*arrays):
    valid = [a[:k].astype(jnp.float32) for a, (_, k) in zip(arrays, parts, strict=True)]
    total = sum(k for _, k in parts)
    mean = sum(jnp.sum(a, axis=0) for a in valid) / total
    var = sum(jnp.sum((a - mean[None]) ** 2, axis=0) for a in valid) / total
    grand = sum(jnp.sum(a) for a in valid) / (total * mean.shape[0])
    spread = sum(jnp.sum((a - grand) ** 2) for a in valid) / (total * mean.shape[0])
    floor = 1e-3 * jnp.maximum(jnp.sqrt(spread), 1e-6)
    return mean, jnp.maximum(jnp.sqrt(var), floor)

  arrays = [c for c, _ in parts]
  out = None
  if all(isinstance(a, jax.Array) for a in arrays):
    mesh = getattr(arrays[0].sharding, "mesh", None)
    if mesh is not None and not isinstance(mesh, jax.sharding.AbstractMesh):
      out = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  return jax.jit(stats, out_shardings=out)(*arrays)


def _global(a, mesh, n: int) -> jax.Array:
  """A host array's first n rows, or a global padded array, as (padded_size(n), ...) rows
  sharded over `data`."""
  size = parallel.padded_size(n, mesh)
  if isinstance(a, jax.Array) and not a.is_fully_addressable:
    if a.shape[0] != size:
      raise ValueError(f"a global array of {a.shape[0]} rows for {n} rows (need {size})")
    return jax.jit(lambda v: v, out_shardings=parallel.data_sharding(mesh))(a)
  if isinstance(a, jax.Array) and a.shape[0] == size:
    return jax.jit(lambda v: v, out_shardings=parallel.data_sharding(mesh))(a)
  host = np.asarray(a)
  return parallel.global_rows(mesh, lambda r: host[r], n)


def save(
  directory,
  mesh,
  *,
  x,
  z,
  z_unpaired,
  mean,
  std,
  meta: dict,
  n_paired: int | None = None,
  n_unpaired: int | None = None,
) -> None:
  """Writes the latents (sharded over `data`) and their JSON meta, atomically.

  Args:
    directory: where (replaced if it exists).
    mesh: device mesh.
    x, z: paired conditions and codes: host arrays of `n_paired` rows, or global arrays
      of `parallel.padded_size(n_paired, mesh)` rows (as `encode` returns).
    z_unpaired: codes of the unpaired images likewise, or None when there are none.
    mean, std: (d,) latent statistics.
    meta: JSON-able facts stored beside the arrays.
    n_paired, n_unpaired: true row counts (default: the host arrays' lengths).
  """
  n_paired = len(x) if n_paired is None else n_paired
  if z_unpaired is None or len(z_unpaired) == 0:
    n_unpaired = 0
  elif n_unpaired is None:
    n_unpaired = len(z_unpaired)
  if n_unpaired == 0:  # Orbax cannot save empty arrays: store one zero row.
    z_unpaired = np.zeros((1, z.shape[1]), np.float32)
  rep = parallel.replicated(mesh)
  tree = {
    "x": _global(x, mesh, n_paired),
    "z": _global(z, mesh, n_paired),
    "z_unpaired": _global(z_unpaired, mesh, max(1, n_unpaired)),
    "mean": jax.device_put(np.asarray(parallel.to_host(mean), np.float32), rep),
    "std": jax.device_put(np.asarray(parallel.to_host(std), np.float32), rep),
  }
  meta = {
    **meta,
    "n_paired": int(n_paired),
    "n_unpaired": int(n_unpaired),
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


def load(directory, mesh, *, sharded: bool = False) -> tuple[dict[str, jax.Array], dict]:
  """Reads the latents onto `mesh`; each process reads only its own rows.

  Args:
    directory: the latents directory.
    mesh: device mesh.
    sharded: if True, return `x`, `z`, `z_unpaired` as stored: padded rows sharded over
      `data`. By default they are trimmed to their true counts and replicated over the
      mesh (gathered device to device, never through one host), as stage 2 samples
      batches from them on every device.

  Returns:
    ({'x', 'z', 'z_unpaired', 'mean', 'std'}, meta); `mean`, `std` replicated.
  """
  path = pathlib.Path(directory).absolute()
  meta = read_meta(path)
  if meta is None:
    raise CheckpointError(f"no latents in {path}; run the pipeline (stage 1 writes them)")
  shard = parallel.data_sharding(mesh)
  rep = parallel.replicated(mesh)
  try:
    abstract = {}
    for k, (shape, dtype) in meta["arrays"].items():
      if k not in ("mean", "std") and shape[0] % mesh.shape[parallel.DATA]:
        # Saved on a mesh with another data axis: read it whole, then re-shard below.
        abstract[k] = jax.ShapeDtypeStruct(tuple(shape), np.dtype(dtype), sharding=rep)
      else:
        sharding = rep if k in ("mean", "std") else shard
        abstract[k] = jax.ShapeDtypeStruct(tuple(shape), np.dtype(dtype), sharding=sharding)
    with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as ckpt:
      tree = ckpt.restore(path, args=ocp.args.Composite(arrays=ocp.args.StandardRestore(abstract)))
  except Exception as e:  # noqa: BLE001 - Orbax raises many types on damaged files.
    raise CheckpointError(
      f"latents in {path} are unreadable ({type(e).__name__}); delete that directory and "
      "rerun to encode again"
    ) from e
  arrays = dict(tree["arrays"])
  counts = {"x": meta["n_paired"], "z": meta["n_paired"], "z_unpaired": max(1, meta["n_unpaired"])}
  for k, n in counts.items():
    if sharded:
      rows = np.minimum(np.arange(parallel.padded_size(n, mesh)), n - 1)
      arrays[k] = jax.jit(lambda a, r=rows: a[r], out_shardings=shard)(arrays[k])
    else:
      arrays[k] = jax.jit(lambda a, n=n: a[:n], out_shardings=rep)(arrays[k])
  return arrays, meta


def encode_run(
  config, exp: Experiment, model: Autoencoder, params, mesh, directory
) -> tuple[dict[str, jax.Array], dict]:
  """A run's latents: encoded and saved to `directory` once per stage-1 model, then read.

  The paired and unpaired images are encoded (each process reading only the rows its
  devices hold) unless `directory` holds latents of the same stage-1 config and data;
  fields a rerun may change (how often to log or save...) do not call for new latents.

  Returns:
    `load`'s ({'x', 'z', 'z_unpaired', 'mean', 'std'}, meta).
  """
  fingerprint = config_lib.fingerprint(config_lib.result_fields(config.stage1))
  fingerprint += config_lib.fingerprint(config.data)
  meta = read_meta(directory)
  if meta is None or meta.get("stage1") != fingerprint:
    ds, split = exp.dataset, exp.split
    n_paired, n_unpaired = len(split.paired), len(split.unpaired)
    z_paired = encode(model, params, ds.train_images, mesh, rows=split.paired)
    z_unpaired = None
    if n_unpaired:
      z_unpaired = encode(model, params, ds.train_images, mesh, rows=split.unpaired)
    mean, std = latent_stats([z_paired, z_unpaired], [n_paired, n_unpaired])
    save(
      directory,
      mesh,
      x=parallel.global_rows(mesh, exp.paired_conditions, n_paired),
      z=z_paired,
      z_unpaired=z_unpaired,
      mean=mean,
      std=std,
      n_paired=n_paired,
      n_unpaired=n_unpaired,
      meta={
        "stage1": fingerprint,
        "image_shape": list(ds.image_shape),
        "num_classes": ds.num_classes,
        "latent_dim": model.latent_dim,
        "latent_shape": list(getattr(model, "latent_shape", (model.latent_dim,))),
        "cond_kind": exp.task.cond_kind,
        "attribute_names": list(ds.attribute_names),
      },
    )
  return load(directory, mesh)


def standardise(z: jax.Array, mean: jax.Array, std: jax.Array) -> jax.Array:
  return (z - mean[None]) / std[None]


def unstandardise(z: jax.Array, mean: jax.Array, std: jax.Array) -> jax.Array:
  return z * std[None] + mean[None]


__all__ = [
  "encode",
  "encode_run",
  "latent_stats",
  "load",
  "read_meta",
  "save",
  "standardise",
  "unstandardise",
]
