"""Tests of lsdm_jax.data.pipeline and .images: TFDS images decoded on access, stage 1's
grain batches.

TFDS mock data (`tfds.testing.mock_data`) stands in for prepared array_record files; a
mock record's pixels are a function of its index alone, so a split read whole and the
same split streamed can be compared value for value.
"""

import io

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

from lsdm_jax import config as config_lib
from lsdm_jax import parallel, stage1
from lsdm_jax.data import images as images_lib
from lsdm_jax.data import pipeline, sources
from lsdm_jax.errors import ConfigError

N = 20  # Mock records per split.


def _load(tmp_path_factory, name, size, **kwargs):
  data_dir = str(tmp_path_factory.mktemp("tfds"))
  with tfds.testing.mock_data(num_examples=N):
    memory = sources.load_source(f"tfds:{name}", data_dir=data_dir, image_size=size)
    lazy = sources.load_source(
      f"tfds:{name}", data_dir=data_dir, image_size=size, streaming=True, **kwargs
    )
  return memory, lazy


@pytest.fixture(
  scope="module",
  params=[("cifar10", 16), ("cifar10", 0), ("celeb_a", 16)],
  ids=["cifar10-16", "cifar10-native", "celeb_a-16"],
)
def pair(request, tmp_path_factory):
  """(the split read whole, the same split streamed)."""
  return _load(tmp_path_factory, *request.param)


@pytest.fixture(scope="module")
def cifar(tmp_path_factory):
  return _load(tmp_path_factory, "cifar10", 16)


def test_a_streamed_split_looks_like_the_one_read_whole(pair):
  memory, lazy = pair
  for images, array in (
    (lazy.train_images, memory.train_images),
    (lazy.test_images, memory.test_images),
  ):
    assert isinstance(images, images_lib.LazyImages)
    assert images.shape == array.shape and len(images) == len(array) == N
    assert images.dtype == array.dtype == np.uint8 and images.ndim == 4
  assert lazy.image_shape == memory.image_shape
  assert lazy.num_classes == memory.num_classes
  for field in ("train_labels", "test_labels"):
    a, b = getattr(memory, field), getattr(lazy, field)
    assert (a is None and b is None) or np.array_equal(a, b)
  np.testing.assert_array_equal(lazy.train_index, memory.train_index)


def test_every_index_gives_the_values_read_whole(pair):
  memory, lazy = pair
  for images, array in (
    (lazy.train_images, memory.train_images),
    (lazy.test_images, memory.test_images),
  ):
    keys = [
      3,
      -1,
      np.int64(7),
      slice(None),
      slice(2, 17, 3),
      slice(None, None, -4),
      np.array([5, 1, 19, 5, -2]),  # Unsorted, repeated, negative.
      [0, 4],
      np.array([[1, 2], [3, 4]]),
      np.arange(N) % 3 == 0,  # A boolean mask.
      np.array([], np.int64),
      (np.array([6, 2]), slice(None), 0),
      (4, slice(2, 5)),
      (Ellipsis, 1),
    ]
    for key in keys:
      got, want = images[key], array[key]
      assert got.shape == want.shape and got.dtype == np.uint8, key
      np.testing.assert_array_equal(got, want, err_msg=repr(key))
    np.testing.assert_array_equal(np.asarray(images), array)
    np.testing.assert_array_equal(sources.to_float(images), sources.to_float(array))


def test_views_read_only_the_rows_they_hold(pair):
  memory, lazy = pair
  rows = np.array([11, 3, 3, 18, 0, 7])
  view = images_lib.take(lazy.train_images, rows)
  assert isinstance(view, images_lib.LazyImages) and view.shape == (6, *memory.image_shape)
  np.testing.assert_array_equal(view.rows, rows)
  np.testing.assert_array_equal(view[np.array([5, 0, 2])], memory.train_images[rows[[5, 0, 2]]])
  inner = view.take(slice(1, None, 2))  # A view of a view.
  np.testing.assert_array_equal(np.asarray(inner), memory.train_images[rows[1::2]])
  np.testing.assert_array_equal(
    images_lib.take(memory.train_images, rows), memory.train_images[rows]
  )
  with pytest.raises(IndexError):
    view.take(2)
  with pytest.raises(IndexError, match="out of bounds"):
    view[6]
  with pytest.raises(IndexError):
    view[np.array([0, 6])]


def test_images_read_alone_are_resized_as_when_read_whole():
  # Each image is resized on its own, so a row read alone, in any company, or whole across
  # read chunks (rows 1024.. are a second read), has the same pixels.
  rng = np.random.default_rng(0)
  source = [{"image": rng.integers(0, 256, (28, 30, 1), dtype=np.uint8)} for _ in range(1030)]
  whole, _, _ = sources._tfds_split("fake", source, 20)
  lazy = images_lib.LazyImages(source, 20)
  for row in (0, 4, 8, 16, 38, 511, 512, 1023, 1024, 1029):
    np.testing.assert_array_equal(lazy[row], whole[row], err_msg=f"row {row}")
  rows = np.array([1029, 4, 700, 1025, 16, 4])
  np.testing.assert_array_equal(lazy[rows], whole[rows])


def test_crop_resize_is_jax_s_antialiased_linear_resize_of_the_centre_square():
  rng = np.random.default_rng(1)
  for shape, size in [((40, 30, 3), 16), ((30, 40, 1), 64), ((32, 32, 3), 32)]:
    image = rng.integers(0, 256, shape, dtype=np.uint8)
    top, left, s = images_lib.centre_square(*shape[:2])
    square = image[top : top + s, left : left + s].astype(np.float32)
    want = jax.image.resize(square, (size, size, shape[2]), "linear")
    got = images_lib.crop_resize(image, size)
    assert got.dtype == np.uint8 and got.shape == (size, size, shape[2])
    # Equal up to float rounding, which may move a pixel that lands on .5 by one level.
    assert np.abs(got.astype(int) - np.rint(np.asarray(want)).astype(int)).max() <= 1


def _batches(images, batch_size, seed, steps, rows=slice(None)):
  """The in-memory path: stage1.train's batch_fn without the device transfer (uint8, made
  float on the device)."""
  n = len(images)
  return [images[pipeline.batch_indices(n, batch_size, seed, s)[rows]] for s in steps]


@pytest.mark.parametrize("prefetch", [0, 2])
def test_grain_batches_are_the_in_memory_batches(cifar, prefetch):
  memory, lazy = cifar
  # Batches of 8 from 20 rows: epochs end inside steps 2 and 4.
  stream = pipeline.stage1_batches(lazy.train_images, 8, 5, num_steps=7, prefetch=prefetch)
  want = _batches(memory.train_images, 8, 5, range(7))
  got = list(stream)
  assert len(got) == 7
  for step, (g, w) in enumerate(zip(got, want, strict=True)):
    assert g.dtype == np.uint8 and g.shape == (8, 16, 16, 3)
    np.testing.assert_array_equal(g, w, err_msg=f"step {step}")
  # Resumed at a step in the middle of an epoch.
  resumed = list(pipeline.stage1_batches(lazy.train_images, 8, 5, start_step=3, num_steps=7))
  for g, w in zip(resumed, want[3:], strict=True):
    np.testing.assert_array_equal(g, w)


def test_each_process_streams_its_own_rows_of_the_batch(cifar):
  memory, lazy = cifar
  rows = parallel.process_rows(parallel.data_sharding(parallel.make_mesh(8, 1)), 8)
  np.testing.assert_array_equal(rows, np.arange(8))  # One process holds every row.
  # Two processes holding half a batch each, as on two hosts.
  halves = [np.arange(4), np.arange(4, 8)]
  parts = [
    list(pipeline.stage1_batches(lazy.train_images, 8, 9, r, start_step=1, num_steps=5))
    for r in halves
  ]
  want = _batches(memory.train_images, 8, 9, range(1, 5))
  for step, w in enumerate(want):
    np.testing.assert_array_equal(parts[0][step], w[:4])
    np.testing.assert_array_equal(parts[1][step], w[4:])
    np.testing.assert_array_equal(np.concatenate([parts[0][step], parts[1][step]]), w)


def test_in_memory_images_stream_through_grain_too(cifar):
  memory, _ = cifar
  got = list(pipeline.stage1_batches(memory.train_images, 4, 1, np.array([3, 1]), num_steps=6))
  for g, w in zip(got, _batches(memory.train_images, 4, 1, range(6), [3, 1]), strict=True):
    np.testing.assert_array_equal(g, w)


def test_step_batches_restart_at_the_step_asked_for(cifar):
  memory, lazy = cifar
  want = _batches(memory.train_images, 8, 2, range(7))
  batch_fn = pipeline.StepBatches(lazy.train_images, 8, 2, None, 7)
  for step in (0, 1, 2, 5, 6):  # A jump (as after a resume), then the last step.
    np.testing.assert_array_equal(batch_fn(step), want[step])
  assert batch_fn.restarts == 2 and batch_fn._iterator is None  # Closed after the last.
  np.testing.assert_array_equal(batch_fn(3), want[3])  # Back again: a third start.
  np.testing.assert_array_equal(batch_fn(4), want[4])
  assert batch_fn.restarts == 3
  batch_fn.close()
  assert batch_fn._iterator is None


def test_worker_processes_decode_the_same_batches(cifar):
  memory, lazy = cifar
  stream = pipeline.stage1_batches(
    lazy.train_images, 8, 4, np.arange(2, 8), start_step=2, num_steps=6, workers=1
  )
  try:
    got = list(stream)
  finally:
    stream.close()
  for g, w in zip(got, _batches(memory.train_images, 8, 4, range(2, 6), slice(2, 8)), strict=True):
    np.testing.assert_array_equal(g, w)


@pytest.mark.parametrize("workers", [0, 1])
def test_batches_become_float_on_the_host_with_to_float(cifar, workers):
  memory, lazy = cifar
  batch_fn = pipeline.StepBatches(lazy.train_images, 8, 6, None, 4, workers=workers, to_float=True)
  try:
    got = [batch_fn(step) for step in range(4)]
  finally:
    batch_fn.close()
  n = len(memory.train_images)
  for step, g in enumerate(got):
    assert g.dtype == np.float32 and g.shape == (8, 16, 16, 3)
    want = sources.to_float(memory.train_images[pipeline.batch_indices(n, 8, 6, step)])
    np.testing.assert_array_equal(g, want)


def _tiny_config(streaming: bool):
  c = config_lib.base_config()
  c.data.source, c.data.streaming = "tfds:cifar10", streaming
  s = c.stage1
  s.features, s.hidden, s.latent_dim = (8,), 16, 4
  s.steps, s.batch_size, s.warmup_steps, s.log_every, s.save_every = 3, 8, 1, 1, 3
  return c


def test_stage1_trains_the_same_params_streaming(cifar, tmp_path):
  memory, lazy = cifar
  mesh = parallel.make_mesh(8, 1)
  rows = np.array([17, 2, 9, 4, 12, 0, 6, 15, 1, 11, 19, 8])  # As train.py's paired ∪ unpaired.
  _, want, history = stage1.train(
    _tiny_config(False), memory.train_images[rows], mesh, tmp_path / "a"
  )
  view = images_lib.take(lazy.train_images, rows)
  _, got, streamed = stage1.train(_tiny_config(True), view, mesh, tmp_path / "b")
  assert [h["loss"] for h in streamed] == [h["loss"] for h in history]
  for a, b in zip(jax.tree.leaves(want), jax.tree.leaves(got), strict=True):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


# --------------------------------------------------------------------------- label pass


class _Records:
  """A data source of real serialized TFDS records, decoded as TFDS decodes them."""

  def __init__(self, info, records, decoders, counts):
    self.dataset_info, self._records = info, records
    self._decoders, self._counts = decoders, counts

  def __len__(self):
    return len(self._records)

  def __getitem__(self, i):
    example = self.dataset_info.features.deserialize_example_np(
      self._records[i], decoders=self._decoders
    )
    self._counts["decoded" if isinstance(example["image"], np.ndarray) else "skipped"] += 1
    return example


def test_the_label_pass_leaves_the_images_encoded(tmp_path):
  from PIL import Image
  from tensorflow_datasets.core import example_serializer

  info = tfds.builder("cifar10", data_dir=str(tmp_path)).info
  serializer = example_serializer.ExampleSerializer(info.features.get_serialized_info())
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
  labels = np.array([3, 1, 4, 1, 5, 9])
  records = []
  for image, label in zip(images, labels, strict=True):
    png = io.BytesIO()
    Image.fromarray(image).save(png, format="PNG")
    records.append(
      serializer.serialize_example({"id": b"x", "image": png.getvalue(), "label": label})
    )
  counts = {"decoded": 0, "skipped": 0}

  def as_data_source(builder, split, decoders=None, **kwargs):
    del builder, split, kwargs
    return _Records(info, records, decoders, counts)

  with tfds.testing.mock_data(as_data_source_fn=as_data_source):
    ds = sources.load_source("tfds:cifar10", data_dir=str(tmp_path), streaming=True)
  np.testing.assert_array_equal(ds.train_labels, labels)
  # Each split decoded its first image (for the shape), and no other.
  assert counts == {"decoded": 2, "skipped": 2 * 6 + 2}
  np.testing.assert_array_equal(ds.train_images[np.array([4, 0])], images[[4, 0]])


# --------------------------------------------------------------------------- config


def test_streaming_settings_are_checked():
  c = config_lib.base_config()
  pipeline.check_config(c)  # The defaults pass.
  c.data.streaming = True
  with pytest.raises(ConfigError, match="data.streaming reads TFDS sources"):
    pipeline.check_config(c)
  c.data.source = "tfds:cifar10"
  pipeline.check_config(c)
  c.data.workers = -1
  with pytest.raises(ConfigError, match="data.workers=-1"):
    pipeline.check_config(c)
  c.data.workers, c.data.streaming = 2, False
  with pytest.raises(ConfigError, match="set data.streaming=True"):
    pipeline.check_config(c)


def test_streaming_a_source_that_is_not_tfds_is_refused():
  with pytest.raises(ConfigError, match="data.streaming reads TFDS sources lazily") as e:
    sources.load_source("mnist5k", streaming=True)
  assert "\n" not in str(e.value)


def test_batch_indices_are_a_pure_function_of_seed_and_step():
  a = pipeline.batch_indices(10, 4, seed=1, step=3)
  assert np.array_equal(a, pipeline.batch_indices(10, 4, seed=1, step=3))
  # Consecutive steps walk through epochs: every row once per epoch.
  rows = np.concatenate([pipeline.batch_indices(10, 5, seed=1, step=s) for s in range(2)])
  assert sorted(rows.tolist()) == list(range(10))
  assert not np.array_equal(a, pipeline.batch_indices(10, 4, seed=2, step=3))
