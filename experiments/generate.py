"""Exports samples of a trained run as one .npz, for evaluation outside the library.

    python -m experiments.generate --workdir=runs/mnist5k_classcond --out=samples.npz \
        [--num_per_class=100] [--seed=0]
    python -m experiments.generate --workdir=runs/mnist5k_superres --out=sr.npz \
        [--num=1000] [--split=test]

classcond: `images` (N, H, W, C) float32 in [0, 1] and `labels` (N,) int32, the class each
image was asked to be (num_per_class per class, classes in order).
superres: `images` (one super-resolved sample per input), `inputs` (N, H/f, W/f, C) the
low-resolution conditions (the split's first `num` images average-pooled by the task's
factor) and `indices` (N,) int64, the rows of the source data set those images are.
"""

from __future__ import annotations

import io
import pathlib

import numpy as np
from absl import app, flags

from lsdm_jax import cli

FLAGS = flags.FLAGS


def _define_flags():
  """Flags are defined only when run as a script, so that tests may import the module."""
  flags.DEFINE_string("workdir", None, "A run directory written by experiments.main.")
  flags.DEFINE_string("out", None, "Output .npz file.")
  flags.DEFINE_integer("num_per_class", None, "classcond: samples per class (default eval's).")
  flags.DEFINE_integer("num", None, "superres: inputs to super-resolve (default eval.num_inputs).")
  flags.DEFINE_enum("split", "test", ["test", "train"], "superres: the split the inputs come from.")
  flags.DEFINE_integer("seed", 0, "Seed of the generator noise.")
  flags.mark_flags_as_required(["workdir", "out"])


def export(
  workdir,
  out,
  *,
  num_per_class: int | None = None,
  num: int | None = None,
  split: str = "test",
  seed: int = 0,
) -> dict[str, np.ndarray]:
  """Generates from the run in `workdir` and writes the arrays to `out` (see the module)."""
  import jax

  import lsdm_jax
  from lsdm_jax import workdir as workdir_lib
  from lsdm_jax.data import load_source
  from lsdm_jax.data.sources import to_float
  from lsdm_jax.errors import ConfigError

  model = lsdm_jax.load(workdir)
  config, task = model.config, model.task
  key = jax.random.key(seed)
  if task.cond_kind == "label":
    k = config.eval.num_per_class if num_per_class is None else num_per_class
    if k < 1:
      raise ConfigError(f"--num_per_class={k} must be positive")
    labels = np.repeat(np.arange(task.num_classes, dtype=np.int32), k)
    arrays = {"images": model.generate(labels, key), "labels": labels}
  else:
    n = config.eval.num_inputs if num is None else num
    if n < 1:
      raise ConfigError(f"--num={n} must be positive")
    ds = load_source(
      config.data.source, data_dir=config.data.data_dir or None, image_size=config.data.image_size
    )
    images, index = (
      (ds.test_images, ds.test_index) if split == "test" else (ds.train_images, ds.train_index)
    )
    rows = np.arange(min(n, len(images)))
    inputs = task.condition(to_float(images[rows]), None)
    arrays = {
      "images": model.generate(inputs, key),
      "inputs": inputs.astype(np.float32),
      "indices": np.asarray(index[rows], np.int64),
    }
  arrays["images"] = np.asarray(arrays["images"], np.float32)
  out = pathlib.Path(out)
  out.parent.mkdir(parents=True, exist_ok=True)
  buffer = io.BytesIO()
  np.savez(buffer, **arrays)
  workdir_lib.atomic_write(out, buffer.getvalue())
  return arrays


def main(argv):
  if len(argv) > 1:
    cli.fail(f"unexpected arguments {argv[1:]}; every setting is a --flag")
  cli.quiet_library_logs()
  arrays = cli.run_guarded(
    export,
    FLAGS.workdir,
    FLAGS.out,
    num_per_class=FLAGS.num_per_class,
    num=FLAGS.num,
    split=FLAGS.split,
    seed=FLAGS.seed,
  )
  print(f"wrote {FLAGS.out}: " + ", ".join(f"{k} {v.shape}" for k, v in arrays.items()))


if __name__ == "__main__":
  _define_flags()
  app.run(main, flags_parser=cli.parse_flags)
