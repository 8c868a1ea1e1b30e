"""Tests of `data.attributes`: CelebA's binary attributes as (N, K) float arrays.

TFDS mock data stands in for prepared CelebA files; its 40 attributes are random bools.
"""

import numpy as np
import pytest
import tensorflow_datasets as tfds

from lsdm_jax import config as config_lib
from lsdm_jax.data import pipeline, sources
from lsdm_jax.errors import ConfigError, DataError

NAMES = ("Smiling", "Male", "Eyeglasses")  # Not in TFDS's (alphabetical) order.


@pytest.fixture(scope="module")
def celeb_a(tmp_path_factory):
  """(read whole, streamed, the raw train and test records' attribute dicts)."""
  data_dir = str(tmp_path_factory.mktemp("tfds"))
  with tfds.testing.mock_data(num_examples=12):
    kwargs = dict(data_dir=data_dir, image_size=16, attributes=NAMES)
    memory = sources.load_source("tfds:celeb_a", **kwargs)
    lazy = sources.load_source("tfds:celeb_a", streaming=True, **kwargs)
    raw = {
      split: [
        r["attributes"]
        for r in tfds.data_source("celeb_a", split=split, data_dir=data_dir, download=False)
      ]
      for split in ("train", "test")
    }
  return memory, lazy, raw


@pytest.mark.parametrize("streaming", [False, True], ids=["in_memory", "streaming"])
def test_attributes_are_float_columns_in_the_order_asked(celeb_a, streaming):
  memory, lazy, raw = celeb_a
  ds = lazy if streaming else memory
  assert ds.attribute_names == NAMES
  for split, attributes in (("train", ds.train_attributes), ("test", ds.test_attributes)):
    assert attributes.shape == (12, 3) and attributes.dtype == np.float32
    want = np.array([[float(r[a]) for a in NAMES] for r in raw[split]], np.float32)
    np.testing.assert_array_equal(attributes, want)
  assert set(np.unique(ds.train_attributes)) <= {0.0, 1.0}
  assert ds.train_labels is None and ds.num_classes == 0
  # Asking for attributes leaves the images as they were.
  np.testing.assert_array_equal(np.asarray(ds.train_images), np.asarray(memory.train_images))


def test_no_attributes_by_default(tmp_path):
  with tfds.testing.mock_data(num_examples=4):
    ds = sources.load_source("tfds:celeb_a", data_dir=str(tmp_path), image_size=8)
  assert ds.train_attributes is None and ds.test_attributes is None
  assert ds.attribute_names == ()


def test_an_unknown_attribute_names_valid_ones(tmp_path):
  with tfds.testing.mock_data(num_examples=4):
    with pytest.raises(
      DataError, match="no attribute 'Eyeglass' \\(did you mean 'Eyeglasses'"
    ) as e:
      sources.load_source("tfds:celeb_a", data_dir=str(tmp_path), attributes=("Male", "Eyeglass"))
  message = str(e.value)
  assert "\n" not in message and "'5_o_Clock_Shadow'" in message and "40 in all" in message


def test_a_tfds_set_without_attributes_is_refused(tmp_path):
  with tfds.testing.mock_data(num_examples=4):
    for streaming in (False, True):
      with pytest.raises(DataError, match="'cifar10' has no binary attributes") as e:
        sources.load_source(
          "tfds:cifar10", data_dir=str(tmp_path), attributes=("Male",), streaming=streaming
        )
      assert "\n" not in str(e.value) and "data.attributes=()" in str(e.value)


@pytest.mark.parametrize("source", ["mnist5k", "npz:/nowhere/data.npz"])
def test_sources_that_are_not_tfds_have_no_attributes(source):
  with pytest.raises(ConfigError, match="has no binary attributes") as e:
    sources.load_source(source, attributes=("Male",))
  assert "\n" not in str(e.value)


def test_attribute_settings_are_checked():
  c = config_lib.base_config()
  c.data.attributes = ("Male",)
  with pytest.raises(ConfigError, match="'mnist5k' has no binary attributes"):
    pipeline.check_config(c)
  c.data.source = "tfds:celeb_a"
  pipeline.check_config(c)
  c.data.attributes = ("Male", "Young", "Male")
  with pytest.raises(ConfigError, match="names \\['Male'\\] more than once"):
    pipeline.check_config(c)
  c.data.attributes = ("Male", "")
  with pytest.raises(ConfigError, match="must be attribute names"):
    pipeline.check_config(c)
