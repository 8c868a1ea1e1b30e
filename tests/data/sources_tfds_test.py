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
