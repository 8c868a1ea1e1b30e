"""Two processes on loopback train like one: multi-host data loading, encoding, latents,
Orbax checkpoints and the sharded steps, checked against a single-process run.

Each worker is this file run as a script, with 2 CPU devices, connected through
`parallel.initialize_distributed` (JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES,
JAX_PROCESS_ID). The reference runs in the test process on 4 of its 8 devices, with the
same global batches. Workers are killed (SIGKILL) on timeout: JAX catches SIGTERM, and a
run whose peer died can hang.
"""

import os
import pathlib
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from lsdm_jax import checkpoints, latents, parallel, stage1, stage2
from lsdm_jax import config as config_lib
from lsdm_jax.data.tasks import Task

TIMEOUT = 360  # Seconds: a hang guard with room for a loaded machine (idle: well under 60).


def _config():
  c = config_lib.base_config()
  c.stage1.features, c.stage1.hidden, c.stage1.latent_dim = (4,), 16, 4
  c.stage1.steps, c.stage1.batch_size, c.stage1.warmup_steps = 4, 16, 1
  c.stage1.log_every, c.stage1.save_every = 2, 4
  s = c.stage2
  s.noise_dim, s.hidden, s.critic_hidden, s.cond_features = 4, (16, 16), (16, 16), 8
  s.steps, s.steps_per_call, s.batch_size, s.n_critic = 4, 2, 16, 2
  s.log_every, s.save_every = 2, 4
  return c


def scenario(workdir: pathlib.Path, mesh) -> dict:
  """Stage 1, encoding, latents through Orbax, stage 2; returns host copies of results."""
  config = _config()
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (40, 8, 8, 1), dtype=np.uint8)
  labels = (np.arange(40) % 3).astype(np.int32)
  paired = np.arange(1, 31)
  ae_model, ae_params, history1 = stage1.train(config, images, mesh, workdir)
  z = latents.encode(ae_model, ae_params, images, mesh, rows=paired, chunk=8)
  mean, std = latents.latent_stats(z, [30])
  latents.save(
    workdir / "latents",
    mesh,
    x=parallel.global_rows(mesh, lambda r: labels[paired[r]], 30),
    z=z,
    z_unpaired=None,
    mean=mean,
    std=std,
    meta={},
    n_paired=30,
  )
  arrays, _ = latents.load(workdir / "latents", mesh)
  data = {
    "x": arrays["x"],
    "z": latents.standardise(arrays["z"], arrays["mean"], arrays["std"]),
    "z_unpaired": latents.standardise(arrays["z_unpaired"], arrays["mean"], arrays["std"]),
  }
  task = Task("classcond", "label", (), num_classes=3)
  _, params2, history2 = stage2.train(config, task, data, mesh, workdir)
  out = parallel.to_host({"ae": ae_params, "stage2": params2, "z": z, "mean": mean})
  flat = {jax.tree_util.keystr(k): v for k, v in jax.tree_util.tree_leaves_with_path(out)}
  flat["loss1"] = np.array([h["loss"] for h in history1])
  flat["loss2"] = np.array([h["gen_loss"] for h in history2])
  return flat


def _worker(workdir: str) -> None:
  parallel.initialize_distributed()
  assert jax.process_count() == 2 and jax.device_count() == 4, jax.devices()
  out = scenario(pathlib.Path(workdir), parallel.make_mesh())
  # The collective that makes the processes agree on the checkpoint step they restore.
  out["min_max"] = np.array(checkpoints.min_max_over_processes(10 + jax.process_index()))
  np.savez(pathlib.Path(workdir) / f"result{jax.process_index()}.npz", **out)


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.mark.slow  # 30 s; the step agreement is also tested with threads (checkpoints_test).
def test_two_processes_match_one(tmp_path):
  port = _free_port()
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  env.update(
    JAX_PLATFORMS="cpu",
    JAX_NUM_CPU_DEVICES="2",
    JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
    JAX_NUM_PROCESSES="2",
    XLA_FLAGS="--xla_backend_optimization_level=0",  # As tests/conftest.py's reference run.
  )
  run_dir = tmp_path / "two"
  run_dir.mkdir()
  procs, logs = [], []
  for i in range(2):
    log = open(tmp_path / f"worker{i}.log", "wb")  # noqa: SIM115 - closed below.
    logs.append(log)
    procs.append(
      subprocess.Popen(
        [sys.executable, __file__, str(run_dir)],
        env={**env, "JAX_PROCESS_ID": str(i)},
        stdout=log,
        stderr=subprocess.STDOUT,
      )
    )
  deadline = time.monotonic() + TIMEOUT
  try:
    # The single-process reference runs while the workers wait on each other.
    ref_dir = tmp_path / "one"
    ref_dir.mkdir()
    want = scenario(ref_dir, parallel.make_mesh(4, 1))
    for p in procs:
      p.wait(timeout=max(1.0, deadline - time.monotonic()))
  except subprocess.TimeoutExpired:
    pass
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
        p.wait()
    for log in logs:
      log.close()
  tails = "\n".join(
    f"--- worker {i} (exit {p.returncode}):\n"
    + (tmp_path / f"worker{i}.log").read_text(errors="replace")[-3000:]
    for i, p in enumerate(procs)
  )
  assert all(p.returncode == 0 for p in procs), tails
  for i in range(2):
    with np.load(run_dir / f"result{i}.npz") as f:
      got = dict(f)
    np.testing.assert_array_equal(got.pop("min_max"), [10, 11])
    assert got.keys() == want.keys()
    for k in want:
      np.testing.assert_allclose(got[k], want[k], rtol=1e-4, atol=1e-5, err_msg=k)
  assert len(want["loss2"]) == 2 and len(want["loss1"]) == 2
  # Both stages checkpointed from both processes into one directory.
  for stage in ("stage1", "stage2"):
    assert [p.name for p in (run_dir / stage).iterdir() if p.name.isdigit()] == ["4"]


if __name__ == "__main__":
  _worker(sys.argv[1])
elif "JAX_PROCESS_ID" in os.environ:  # pragma: no cover - imported by a worker by mistake.
  pytest.skip("worker environment", allow_module_level=True)
