"""The one place that builds the device mesh and the shardings.

Batches are split over the `data` axis; parameters are replicated, except that with a
`model` axis of size > 1 the large dense and conv kernels are split over it along their
output dimension (tensor parallelism for the wide layers). Every global array is built
from the rows this process's devices hold (`process_rows`), with
`jax.make_array_from_process_local_data`, so the same code runs on one CPU, eight
simulated devices, or many hosts, and no host ever needs another host's rows.

Multi-host: `initialize_distributed` (called by `experiments.main` when
`config.multihost` is set) connects the processes before any other JAX call.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from lsdm_jax.errors import ConfigError

DATA, MODEL = "data", "model"

# Kernels with at least this many entries are split over `model` (when it is > 1); smaller
# ones are replicated, since splitting them costs more in collectives than it saves.
MIN_SPLIT_SIZE = 2**16


def initialize_distributed() -> None:
  """Connects this process to the others (`jax.distributed.initialize`).

  Where the cluster is auto-detected (Cloud TPU, SLURM, Open MPI...) nothing needs to be
  set. Elsewhere set, for every process, the environment variables
  `JAX_COORDINATOR_ADDRESS` (host:port of process 0, read by JAX itself),
  `JAX_NUM_PROCESSES` and `JAX_PROCESS_ID`. They are environment variables, not config
  fields, because they differ between the processes of one run, while the config (and
  the workdir's `config.json`) must be the same for all of them. On CPU, cross-process
  collectives use gloo, and `JAX_NUM_CPU_DEVICES` sets the devices per process.
  """
  kwargs = {}
  for name, arg in (("JAX_NUM_PROCESSES", "num_processes"), ("JAX_PROCESS_ID", "process_id")):
    value = os.environ.get(name)
    if value:
      try:
        kwargs[arg] = int(value)
      except ValueError:
        raise ConfigError(f"{name}={value!r} must be an integer") from None
  if "jax_cpu_collectives_implementation" in jax.config.values:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(**kwargs)


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


def local_mesh() -> Mesh:
  """A mesh of this process's own devices (all on `data`), for work one process does
  alone: sample grids and metrics on process 0."""
  devices = np.asarray(jax.local_devices()).reshape(-1, 1)
  return Mesh(devices, (DATA, MODEL), axis_types=(jax.sharding.AxisType.Auto,) * 2)


def data_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over `data`, the rest replicated."""
  return NamedSharding(mesh, P(DATA))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def param_shardings(mesh: Mesh, params, min_size: int | None = None):
  """Shardings for a parameter tree: replicated, or split over `model` for big kernels.

  A kernel with at least `min_size` (default `MIN_SPLIT_SIZE`) entries whose last
  (output) dimension divides by the `model` axis size is split along that dimension;
  everything else is replicated.
  """
  model = mesh.shape[MODEL]
  min_size = MIN_SPLIT_SIZE if min_size is None else min_size

  def spec(x) -> NamedSharding:
    shape = np.shape(x)
    if model > 1 and len(shape) >= 2 and np.prod(shape) >= min_size and shape[-1] % model == 0:
      return NamedSharding(mesh, P(*([None] * (len(shape) - 1)), MODEL))
    return replicated(mesh)

  return jax.tree.map(spec, params)


def create_sharded(init_fn, mesh: Mesh, min_size: int | None = None):
  """Runs `init_fn()` so that its outputs are born sharded (never whole on one device).

  Returns:
    (tree, shardings).
  """
  shardings = param_shardings(mesh, jax.eval_shape(init_fn), min_size)
  return jax.jit(init_fn, out_shardings=shardings)(), shardings


def check_batch_size(batch_size: int, mesh: Mesh, what: str) -> None:
  """The global batch must split evenly over the data axis and over processes.

  Raises:
    ConfigError: naming the field and the multiple to use.
  """
  d = mesh.shape[DATA]
  if batch_size < 1 or batch_size % d or batch_size % jax.process_count():
    raise ConfigError(
      f"{what}={batch_size} must be divisible by the data-parallel size {d} and the "
      f"{jax.process_count()} process(es); use a multiple of {np.lcm(d, jax.process_count())}"
    )


def padded_size(n: int, mesh: Mesh) -> int:
  """`n` rounded up to a multiple of the data axis size."""
  d = mesh.shape[DATA]
  return -(-n // d) * d


def process_rows(sharding: NamedSharding, global_size: int) -> np.ndarray:
  """The rows (leading-axis indices, sorted) of a `global_size`-row array that this
  process's devices hold under `sharding`: what this process must load."""
  index_map = sharding.addressable_devices_indices_map((global_size,))
  rows = set()
  for index in index_map.values():
    rows.update(range(*index[0].indices(global_size)))
  return np.fromiter(sorted(rows), np.int64, len(rows))


def global_batch(mesh: Mesh, local_batch, global_size: int | None = None):
  """Assembles a global, `data`-sharded batch from this process's rows of it.

  Args:
    mesh: the device mesh.
    local_batch: pytree of host arrays holding the rows `process_rows(data_sharding(mesh),
      global_size)`, in that order (the whole batch when there is one process).
    global_size: rows of the global batch (default: inferred from the local rows).
  """
  sharding = data_sharding(mesh)

  if global_size is None:
    me = jax.process_index()
    held = sum(any(d.process_index == me for d in row) for row in mesh.devices)
    scale = (mesh.shape[DATA], held)

  def make(x):
    x = np.asarray(x)
    size = global_size if global_size is not None else len(x) * scale[0] // scale[1]
    return jax.make_array_from_process_local_data(sharding, x, (size, *x.shape[1:]))

  return jax.tree.map(make, local_batch)


def global_rows(mesh: Mesh, fetch: Callable[[np.ndarray], np.ndarray], n: int) -> jax.Array:
  """A global (padded_size(n), ...) array sharded over `data` from a row reader.

  Each process calls `fetch(rows)` for only the rows its devices hold (row indices in
  [0, n); rows past n, the padding, repeat row n − 1).
  """
  size = padded_size(n, mesh)
  rows = np.minimum(process_rows(data_sharding(mesh), size), n - 1)
  return global_batch(mesh, fetch(rows), size)


def to_host(tree):
  """Host (numpy) copies of a pytree of global arrays, on every process.

  Replicated and fully addressable arrays are copied locally; arrays split over other
  processes' devices are all-gathered, a collective that every process must join.
  """

  def get(x):
    if not isinstance(x, jax.Array):
      return np.asarray(x)
    if x.is_fully_addressable:
      return np.asarray(jax.device_get(x))
    if x.is_fully_replicated:
      return np.asarray(x.addressable_data(0))
    return multihost_utils.process_allgather(x, tiled=True)

  return jax.tree.map(get, tree)


def sync(name: str) -> None:
  """A barrier across processes (no-op with one process)."""
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)


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
