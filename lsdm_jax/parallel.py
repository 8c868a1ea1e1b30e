"""The one place that builds the device mesh and the shardings.

Batches are split over the `data` axis; parameters are replicated, except that with a
`model` axis of size > 1 the large dense and conv kernels are split over it along their
output dimension (tensor parallelism for the wide layers). Global batches are built from
each process's local slice with `jax.make_array_from_process_local_data`, so the same
code runs on one CPU, eight simulated devices, or many hosts.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from lsdm_jax.errors import ConfigError

DATA, MODEL = "data", "model"


def make_mesh(data: int = -1, model: int = 1) -> Mesh:
  """A (data, model) mesh; -1 for `data` means all the devices `model` leaves.

  A single process may use fewer devices than it has (the first data·model ones), which
  benchmarks and sharding tests use; several processes must use them all.

  Raises:
    ConfigError: if the sizes do not fit the devices.
  """
  n = jax.device_count()
  if model < 1 or n % model:
    raise ConfigError(f"mesh.model={model} must be >= 1 and divide the {n} devices")
  if data == -1:
    data = n // model
  used = data * model
  if data < 1 or used > n or (jax.process_count() > 1 and used != n):
    raise ConfigError(
      f"mesh.data={data} x mesh.model={model} does not fit the {n} devices of "
      f"{jax.process_count()} process(es) (use mesh.data=-1 to take all the rest)"
    )
  return jax.make_mesh(
    (data, model),
    (DATA, MODEL),
    axis_types=(jax.sharding.AxisType.Auto,) * 2,
    devices=jax.devices()[:used],
  )


def data_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over `data`, the rest replicated."""
  return NamedSharding(mesh, P(DATA))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def param_shardings(mesh: Mesh, params, min_size: int = 2**16):
  """Shardings for a parameter tree: replicated, or split over `model` for big kernels.

  A kernel with at least `min_size` entries whose last (output) dimension divides by
  the `model` axis size is split along that dimension; everything else is replicated.
  """
  model = mesh.shape[MODEL]

  def spec(x) -> NamedSharding:
    shape = np.shape(x)
    if model > 1 and len(shape) >= 2 and np.prod(shape) >= min_size and shape[-1] % model == 0:
      return NamedSharding(mesh, P(*([None] * (len(shape) - 1)), MODEL))
    return replicated(mesh)

  return jax.tree.map(spec, params)


def create_sharded(init_fn, mesh: Mesh):
  """Runs `init_fn()` so that its outputs are born sharded (never whole on one device).

  Returns:
    (tree, shardings).
  """
  shardings = param_shardings(mesh, jax.eval_shape(init_fn))
  return jax.jit(init_fn, out_shardings=shardings)(), shardings


def check_batch_size(batch_size: int, mesh: Mesh, what: str) -> None:
  """The global batch must split evenly over the data axis and over processes."""
  d = mesh.shape[DATA]
  if batch_size % d or batch_size % jax.process_count():
    raise ConfigError(
      f"{what}={batch_size} must be divisible by the data-parallel size {d} and the "
      f"{jax.process_count()} process(es); use a multiple of {np.lcm(d, jax.process_count())}"
    )


def global_batch(mesh: Mesh, local_batch):
  """Assembles a global, `data`-sharded batch from this process's slice of it."""
  sharding = data_sharding(mesh)
  return jax.tree.map(
    lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), local_batch
  )


def process_slice(global_size: int) -> slice:
  """The rows of a global batch that this process loads."""
  per = global_size // jax.process_count()
  i = jax.process_index()
  return slice(i * per, (i + 1) * per)


def needs_sync_dispatch() -> bool:
  """jax < 0.11 deadlocks on CPU when steps with cross-device all-reduces are queued
  back to back; waiting for each step's result avoids it (jax 0.12 has no such bug)."""
  major, minor = (int(p) for p in jax.__version__.split(".")[:2])
  return (major, minor) < (0, 11) and jax.default_backend() == "cpu" and jax.device_count() > 1


_SYNC = None


def dispatch_barrier(tree) -> None:
  """Blocks on `tree` only where the CPU dispatch deadlock needs it."""
  global _SYNC
  if _SYNC is None:
    _SYNC = needs_sync_dispatch()
  if _SYNC:
    jax.block_until_ready(tree)


def is_main_process() -> bool:
  """Process 0 alone writes logs, images and JSON; Orbax writes from every process."""
  return jax.process_index() == 0
