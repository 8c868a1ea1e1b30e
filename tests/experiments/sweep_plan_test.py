"""The sweep's plan: the grid, the extension runs, the baselines, configs and estimates."""

import re

import pytest

from experiments import sweep_plan
from experiments.configs import mnist5k_classcond


def test_full_plan_covers_the_grid_the_extension_and_the_baselines(tmp_path):
  s = sweep_plan.full_settings()
  jobs = sweep_plan.plan(s)
  assert len({j.name for j in jobs}) == len(jobs)
  groups = [j.group for j in jobs]
  assert groups.count("grid") == 2 * 4 * 3 * 2
  assert groups.count("extension") == len(s.extension) * 3 * 3  # n_unpaired > 0 only.
  assert all(j.n_unpaired > 0 and j.unpaired_weight == 0.5 for j in sweep_plan.extension_jobs(s))
  assert groups.count("baseline") == 2 * 3 * 3
  assert groups.index("baseline") == len(jobs) - groups.count("baseline")  # LSDM runs first.
  # Within a stage-1 key the paper's runs come first, and they share the key.
  first = [j for j in jobs if (j.n_paired, j.n_unpaired, j.seed) == (100, 500, 0)]
  assert [j.group for j in first] == ["grid", "grid", "extension", "extension"]
  assert jobs.index(first[0]) + 3 == jobs.index(first[-1])
  keys = {sweep_plan.stage1_key(sweep_plan.lsdm_config(j, s)) for j in first}
  assert len(keys) == 1
  other = sweep_plan.Job("lsdm", 100, 0, 1, "critic")
  assert sweep_plan.stage1_key(sweep_plan.lsdm_config(other, s)) not in keys
  text = sweep_plan.format_plan(s, tmp_path)
  assert "extension runs (stage2.unpaired_weight=0.5): 36" in text and "estimated total" in text
  quick = sum(sweep_plan.estimates(sweep_plan.quick_settings()).values())
  assert quick < 20 * 60  # The --quick budget, by the same estimate.


def test_settings_default_to_the_library_configs():
  s = sweep_plan.full_settings()
  job = sweep_plan.Job("lsdm", 500, 3500, 2, "sinkhorn")
  config = sweep_plan.lsdm_config(job, s)
  expected = mnist5k_classcond.get_config("sinkhorn")
  assert config.stage1.to_dict() == expected.stage1.to_dict()
  assert config.stage2.to_dict() == expected.stage2.to_dict()
  assert config.seed == config.data.split_seed == 2
  with pytest.raises(KeyError, match="stepz"):  # A misspelt override is an error.
    sweep_plan.lsdm_config(
      job,
      sweep_plan.Settings("x", (500,), (0,), (0,), ("critic",), (), overrides={"stage1.stepz": 1}),
    )


def test_sets_reach_every_lsdm_config_and_the_diffusion_config_and_the_name():
  quick = sweep_plan.quick_settings()
  s = sweep_plan.with_sets(
    quick, ["stage2.steps=20000", "stage2.hidden=(128, 128)"], ["steps=4000", "lr=1"]
  )
  assert (
    s.name
    == "quick (stage2.steps=20000, stage2.hidden=(128, 128), diffusion.steps=4000, diffusion.lr=1)"
  )
  for estimator in ("critic", "sinkhorn"):  # Wins over the quick sweep's per-estimator steps.
    config = sweep_plan.lsdm_config(sweep_plan.Job("lsdm", 500, 3500, 0, estimator), s)
    assert config.stage2.steps == 20000 and config.stage2.hidden == (128, 128)
    assert config.stage1.steps == quick.overrides["stage1.steps"]  # The rest is kept.
  assert s.diffusion == {"steps": 4000, "lr": 1.0}
  assert sweep_plan.with_sets(quick) is quick


@pytest.mark.parametrize(
  "lsdm, diffusion, message",
  [
    (["stage2.stepz=1"], [], "--set 'stage2.stepz=1': use KEY=VALUE"),
    (["stage2.steps"], [], "--set 'stage2.steps': use KEY=VALUE"),
    (["stage2.steps=1.5"], [], "stage2.steps takes int values like 6000"),
    (["stage2.steps=-3"], [], "stage2.steps=-3 must be a positive number"),
    ([], ["steps=many"], "steps takes int values like 1000"),
    ([], ["prediction=x"], "prediction='x'; use one of"),
    (["data.n_paired=100"], [], "--set cannot change ['data.n_paired']: the sweep sets them"),
    (["stage2.estimator=sinkhorn"], [], "--set cannot change ['stage2.estimator']"),
  ],
)
def test_a_bad_set_is_a_value_error_naming_it(lsdm, diffusion, message):
  with pytest.raises(ValueError, match=re.escape(message)):
    sweep_plan.with_sets(sweep_plan.full_settings(), lsdm, diffusion)
