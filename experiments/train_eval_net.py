"""Trains a data set's evaluation feature net once and writes it into the package.

    python -m experiments.train_eval_net [--source=mnist5k] [--dtype=float16] [--out=FILE]

The net is `lsdm_jax.metrics.classifier`'s `ClassifierCNN`, trained with its default recipe
(seeded) on the train split only, and written as a small .npz (`classifier.export_eval_net`)
to lsdm_jax/metrics/assets/<source>_eval_net_<version>.npz. The command prints the file's
sha256 and the `ShippedNet` entry to record in `classifier.SHIPPED_NETS`; from then on every
machine and JAX version evaluates that data set with these weights. It also prints the
net's accuracy on the test split, the ceiling of the evaluation's accuracy (reported only:
no choice is made on the test split).
"""

from __future__ import annotations

import pathlib
import re

import numpy as np
from absl import app, flags

from lsdm_jax import cli
from lsdm_jax.data import load_source
from lsdm_jax.metrics import classifier

FLAGS = flags.FLAGS


def _define_flags():
  """Flags are defined only when run as a script, so that tests may import the module."""
  flags.DEFINE_string("source", "mnist5k", "The data source whose evaluation net to train.")
  flags.DEFINE_enum(
    "dtype", "float16", ["float32", "float16"], "Stored parameter type (loaded as float32)."
  )
  flags.DEFINE_string("out", None, "Output .npz (default: the package's assets directory).")


def default_path(source: str) -> pathlib.Path:
  """Where the shipped net of `source` lives in the package."""
  name = re.sub(r"[^A-Za-z0-9_]+", "_", source).strip("_")
  return classifier.ASSETS_DIR / f"{name}_eval_net_{classifier.CLASSIFIER_VERSION}.npz"


def train_and_export(source: str, out: str | None = None, dtype: str = "float16") -> dict:
  """Trains and writes the net; returns its metadata with `sha256` and `test_accuracy`."""
  dataset = load_source(source)
  path = pathlib.Path(out) if out else default_path(source)
  path.parent.mkdir(parents=True, exist_ok=True)
  meta = classifier.export_eval_net(dataset, path, dtype=dtype)
  net, _ = classifier.read_eval_net(path, sha256=meta["sha256"])
  predictions = net.predict(dataset.test_images)
  return {
    **meta,
    "path": str(path),
    "test_accuracy": float(np.mean(predictions == dataset.test_labels)),
  }


def main(argv):
  if len(argv) > 1:
    cli.fail(f"unexpected arguments {argv[1:]}; every setting is a --flag")
  cli.quiet_library_logs()
  meta = cli.run_guarded(train_and_export, FLAGS.source, FLAGS.out, FLAGS.dtype)
  print(f"wrote {meta['path']} (sha256 {meta['sha256']})")
  print(f"test accuracy {meta['test_accuracy']:.4f}; trained with {meta['trained_with']}")
  print("record in lsdm_jax/metrics/classifier.py SHIPPED_NETS:")
  print(
    "  ShippedNet(\n"
    f"    source={meta['source']!r},\n"
    f"    image_shape={tuple(meta['image_shape'])!r},\n"
    f"    num_classes={meta['num_classes']},\n"
    f"    train_fingerprint={meta['train_fingerprint']!r},\n"
    f"    recipe={meta['recipe']!r},\n"
    f"    filename={pathlib.Path(meta['path']).name!r},\n"
    f"    sha256={meta['sha256']!r},\n"
    "  ),"
  )


if __name__ == "__main__":
  _define_flags()
  app.run(main, flags_parser=cli.parse_flags)
