"""Tests of the `tfds:<name>` sources on TFDS mock data (no download, no TensorFlow).

`tfds.testing.mock_data` stands in for prepared array_record files behind
`tfds.data_source`, the path `sources` reads without TensorFlow.
"""

import numpy as np
import pytest
import tensorflow_datasets as tfds

from lsdm_jax.data import images, sources


@pytest.mark.parametrize(
  "name, shape", [("mnist", (28, 28, 1)), ("fashion_mnist", (28, 28, 1)), ("cifar10", (32, 32, 3))]
)
def test_labelled_tfds_sources_load_both_splits(tmp_path, name, shape):
  with tfds.testing.mock_data(num_examples=12):
    ds = sources.load_source(f"tfds:{name}", data_dir=str(tmp_path))
  assert ds.name == f"tfds:{name}"
  assert ds.train_images.shape == (12, *shape) and ds.test_images.shape == (12, *shape)
  assert ds.train_images.dtype == np.uint8 and ds.image_shape == shape
  assert ds.train_labels.dtype == np.int32 and ds.train_labels.shape == (12,)
  assert 0 <= ds.train_labels.min() and ds.train_labels.max() < ds.num_classes <= 10
  np.testing.assert_array_equal(ds.test_index, np.arange(12))


def test_celeb_a_is_cropped_and_resized_and_unlabelled(tmp_path):
  with tfds.testing.mock_data(num_examples=5):
    ds = sources.load_source("tfds:celeb_a", data_dir=str(tmp_path), image_size=16)
  assert ds.train_images.shape == (5, 16, 16, 3) and ds.train_images.dtype == np.uint8
  assert ds.train_labels is None and ds.num_classes == 0
  # Mock pixels are uniform noise: the resize averages them towards mid-grey.
  assert 60 < ds.train_images.mean() < 200


def test_crop_resize_keeps_the_centre_square():
  image = np.zeros((6, 10, 1), np.uint8)
  image[:, 2:8] = 255  # The centre 6x6 square is white, the side columns black.
  out = images.crop_resize(image, 3)
  assert out.shape == (3, 3, 1) and np.all(out == 255)


def test_tfds_sources_are_named_by_version_image_size_and_split_sizes(tmp_path):
  with tfds.testing.mock_data(num_examples=6):
    ds = sources.load_source("tfds:cifar10", data_dir=str(tmp_path))
    streamed = sources.load_source("tfds:cifar10", data_dir=str(tmp_path), streaming=True)
    faces = sources.load_source("tfds:celeb_a", data_dir=str(tmp_path), image_size=8)
    faces_16 = sources.load_source("tfds:celeb_a", data_dir=str(tmp_path), image_size=16)
    male = sources.load_source(
      "tfds:celeb_a", data_dir=str(tmp_path), image_size=8, attributes=("Male",)
    )
  with tfds.testing.mock_data(num_examples=7):
    more = sources.load_source("tfds:cifar10", data_dir=str(tmp_path))
  version = str(tfds.builder_cls("cifar10").VERSION)
  assert (
    ds.fingerprint.startswith(f"tfds:cifar10/{version}|") and "train 6|test 6" in ds.fingerprint
  )
  # Streaming and attributes change neither the rows nor their pixels; sizes do.
  assert streamed.fingerprint == ds.fingerprint and male.fingerprint == faces.fingerprint
  assert len({ds.fingerprint, more.fingerprint, faces.fingerprint, faces_16.fingerprint}) == 4
  assert ds.split_fingerprint("train") != ds.split_fingerprint("test")
