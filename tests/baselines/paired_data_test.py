"""The baselines' settings: sections of `base_config()`, checked field by field."""

import ml_collections
import pytest

from lsdm_jax import config as config_lib
from lsdm_jax.baselines import consistency, latent_diffusion, paired_data
from lsdm_jax.errors import ConfigError

BAD = [
  ("latent_diffusion", "steps", 0, "latent_diffusion.steps=0 must be a positive number"),
  ("latent_diffusion", "ema_decay", 1.0, r"latent_diffusion.ema_decay=1.0 must be in \[0, 1\)"),
  ("latent_diffusion", "prediction", "x0", "latent_diffusion.prediction='x0' is not one of"),
  ("consistency", "restart_logsnr", 20.0, "consistency.restart_logsnr=20.0 must be in"),
  ("consistency", "warmup_steps", -1, "consistency.warmup_steps=-1 must be >= 0"),
  ("pixel_wgcs", "critic_widths", (0,), r"pixel_wgcs.critic_widths=\(0,\) must be one or more"),
  ("pixel_wgcs", "gp_weight", -1.0, "pixel_wgcs.gp_weight=-1.0 must be >= 0"),
  ("cvae", "learning_rate", 0.0, "cvae.learning_rate=0.0 must be a positive number"),
  ("cvae", "encoder_widths", (32.5,), r"cvae.encoder_widths=\(32.5,\) has the wrong type"),
  ("superres_regressor", "features", (), r"superres_regressor.features=\(\) must be one or more"),
]


# A baseline's own rules (beyond the schema's types and ranges) are checked by the baseline.
OWN_CHECKS = {
  "latent_diffusion": latent_diffusion.check_config,
  "consistency": consistency.check_config,
}


@pytest.mark.parametrize(("name", "field", "value", "message"), BAD)
def test_a_bad_value_is_one_config_error_naming_the_field(name, field, value, message):
  config = config_lib.base_config()
  config[name][field] = value
  own_rule = field in ("prediction", "restart_logsnr")
  if not own_rule:  # The schema's checks see it in the whole config.
    with pytest.raises(ConfigError, match=message):
      config_lib.validate(config)
  with pytest.raises(ConfigError, match=message):
    paired_data.settings(name, config[name], OWN_CHECKS.get(name))


def test_a_bad_schedule_is_refused():
  section = config_lib.base_config().cvae
  section.schedule = "step"
  with pytest.raises(ConfigError, match=r"cvae.schedule='step' is not one of"):
    paired_data.settings("cvae", section)


def test_defaults_are_valid_and_frozen_settings_are_hashable():
  config_lib.validate(config_lib.base_config())
  for name in config_lib.BASELINES:
    a = paired_data.settings(name, None)
    b = paired_data.settings(name, config_lib.base_config()[name])
    assert isinstance(a, ml_collections.FrozenConfigDict)
    assert hash(a) == hash(b) and a == b


def test_an_unknown_field_is_refused_by_the_locked_config():
  config = config_lib.base_config()
  config.lock()
  with pytest.raises(AttributeError, match="stepz"):
    config.latent_diffusion.stepz = 10


def test_a_whole_config_instead_of_a_section_is_refused():
  with pytest.raises(ConfigError, match="cvae: pass the config section"):
    paired_data.settings("cvae", {"steps": 3})


def test_without_length_drops_only_the_run_length():
  a = paired_data.settings("cvae", None)
  short = config_lib.base_config().cvae
  short.steps, short.steps_per_call = 10, 5
  b = paired_data.settings("cvae", short)
  assert a != b
  assert paired_data.without_length(a) == paired_data.without_length(b)
  assert "steps" not in paired_data.without_length(a)
