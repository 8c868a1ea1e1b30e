"""Tests of the schema's generic checks and its derived fields (learning-rate scaling)."""

import json

import pytest

from experiments.configs import cifar10_classcond
from lsdm_jax import config as config_lib
from lsdm_jax import workdir
from lsdm_jax.errors import ConfigError


def test_the_defaults_are_valid():
  config_lib.validate(config_lib.base_config())


@pytest.mark.parametrize(
  "field, value, message",
  [
    ("stage1.steps", 0, r"stage1.steps=0 must be a positive number"),
    ("stage2.ema_decay", 1.0, r"stage2.ema_decay=1.0 must be in \[0, 1\)"),
    ("semi.alpha", 1.0, r"semi.alpha=1.0 must be in \(0, 1\)"),
    ("stage1.features", (), r"stage1.features=\(\) must be positive channel counts"),
    ("stage2.seed", -2, r"stage2.seed=-2 must be >= 0, or -1 for the run's seed"),
    ("stage1.final_lr_scale", 1.5, r"stage1.final_lr_scale=1.5 must be in \[0, 1\]"),
    ("stage1.batch_size", True, r"stage1.batch_size=True has the wrong type"),
    ("stage1.features", (8.5,), r"stage1.features=\(8.5,\) has the wrong type"),
  ],
)
def test_a_bad_value_is_one_error_naming_the_field(field, value, message):
  c = config_lib.base_config()
  section, name = field.split(".")
  c[section][name] = value
  with pytest.raises(ConfigError, match=message) as e:
    config_lib.validate(c)
  assert "\n" not in str(e.value)


def test_the_learning_rate_resolves_from_an_overridden_batch(tmp_path):
  c = cifar10_classcond.get_config()
  config_lib.validate(c)
  assert c.stage1.learning_rate == 4.5e-6 * 128
  c = cifar10_classcond.get_config()
  c.stage1.batch_size = 512  # As --config.stage1.batch_size=512 would.
  config_lib.validate(c)
  assert c.stage1.learning_rate == 4.5e-6 * 512
  # config.json holds the resolved rate, and reading it back resolves to the same.
  workdir.prepare(tmp_path, c)
  saved = json.loads((tmp_path / "config.json").read_text())
  assert saved["stage1"]["learning_rate"] == 4.5e-6 * 512
  again = workdir.load_config(tmp_path)
  config_lib.validate(again)
  assert again.stage1.learning_rate == 4.5e-6 * 512


def test_a_learning_rate_beside_a_scaling_rule_is_refused():
  c = cifar10_classcond.get_config()
  c.stage1.learning_rate = 1e-3
  with pytest.raises(ConfigError, match=r"stage1.learning_rate=0.001 is resolved from"):
    config_lib.validate(c)
  c = config_lib.base_config()
  c.stage2.lr_scaling, c.stage2.base_learning_rate = "linear", 1e-6
  with pytest.raises(ConfigError, match=r"stage2 has two"):
    config_lib.validate(c)
  c = config_lib.base_config()
  c.stage1.lr_scaling = "sqrt"
  with pytest.raises(ConfigError, match=r"stage1.lr_scaling='sqrt' is not one of"):
    config_lib.validate(c)
