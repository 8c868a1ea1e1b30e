"""Tasks say what the condition x is for an image y.

* `classcond`: x is the class label (int32), y the image.
* `attributes`: x is a vector of K binary attributes (float32 in {0, 1}), y the image.
* `superres`: x is y average-pooled by `factor` (float32 NHWC in [0, 1]), y the image.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from lsdm_jax import config as config_lib
from lsdm_jax.errors import ConfigError

TASKS = ("classcond", "attributes", "superres")


@dataclasses.dataclass(frozen=True)
class Task:
  """What x is. `cond_kind` is 'label', 'attributes' or 'image'; `cond_shape` excludes
  the batch."""

  name: str
  cond_kind: str
  cond_shape: tuple[int, ...]
  num_classes: int = 0
  factor: int = 1

  def condition(
    self,
    images: np.ndarray | None,
    labels: np.ndarray | None,
    attributes: np.ndarray | None = None,
  ) -> np.ndarray:
    """The conditions x for images y (float32 [0, 1]), their labels or attributes."""
    if self.cond_kind == "attributes":
      if attributes is None:
        raise ConfigError("task 'attributes' needs attributes: set data.attributes")
      return np.asarray(attributes, np.float32)
    if self.cond_kind == "label":
      if labels is None:
        raise ConfigError("task 'classcond' needs a labelled data source")
      return labels.astype(np.int32)
    return avg_pool(images, self.factor)


def block_mean(images, factor: int):
  """(N, H, W, C) → (N, H/f, W/f, C) means of f×f blocks, of a numpy or a jax array (also
  inside jit): the degradation of the superres task."""
  n, h, w, c = images.shape
  if h % factor or w % factor:
    raise ValueError(f"factor {factor} does not divide the image size {h}x{w}")
  return images.reshape(n, h // factor, factor, w // factor, factor, c).mean(axis=(2, 4))


def avg_pool(images: np.ndarray, factor: int) -> np.ndarray:
  """(N, H, W, C) → (N, H/f, W/f, C) block means, as the paper's low-resolution input."""
  return block_mean(np.asarray(images, np.float32), factor)


def check_config(c) -> None:
  """Checks the `task` section: the task's name, and what `task.projection` needs."""
  config_lib.check_choice(c.task.name, TASKS, "task.name")
  if c.task.projection > 0 and c.task.name != "superres":
    raise ConfigError("task.projection > 0 needs task.name='superres' (x is a pooled image)")


def make_task(
  name: str,
  image_shape: tuple[int, int, int],
  num_classes: int,
  factor: int = 4,
  num_attributes: int = 0,
):
  """Builds a `Task`, checking that it fits the data."""
  if name == "attributes":
    if num_attributes < 1:
      raise ConfigError(
        "task 'attributes' needs attributes to condition on: set data.attributes, e.g. "
        "--config.data.attributes=\"('Male', 'Smiling')\" with data.source=tfds:celeb_a"
      )
    return Task("attributes", "attributes", (num_attributes,))
  if name == "classcond":
    if num_classes < 2:
      raise ConfigError(
        "task 'classcond' needs labels with at least 2 classes; this source has none "
        "(use --config.task.name=superres, or an npz with 'labels')"
      )
    return Task("classcond", "label", (), num_classes=num_classes)
  if name == "superres":
    h, w, c = image_shape
    if factor not in (2, 4) or h % factor or w % factor:
      raise ConfigError(f"task.factor={factor} must be 2 or 4 and divide the image size {h}x{w}")
    return Task("superres", "image", (h // factor, w // factor, c), num_classes, factor)
  raise ConfigError(f"task.name={name!r} is not one of {TASKS}")
