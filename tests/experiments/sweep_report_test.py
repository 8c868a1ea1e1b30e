"""The sweep's tables and plots, on hand-made rows (no training)."""

import pytest

from experiments import sweep_report


def _row(method="lsdm", seed=0, status="ok", **fields):
  metrics = fields.pop("metrics", {})
  row = {
    "name": f"{method}_{seed}_{len(metrics)}",
    "method": method,
    "status": status,
    "error": None if status == "ok" else "NonFiniteError: stage2 step 3",
    "estimator": "critic" if method == "lsdm" else None,
    "n_paired": 500,
    "n_unpaired": 3500,
    "unpaired_weight": 0.0 if method == "lsdm" else None,
    "seed": seed,
    "ddim_steps": None,
    "reference_run": None,
    "closest_to_reference_fd": None,
    "metrics": metrics,
  }
  row.update(fields)
  return row


def _lsdm(seed, fd, weight=0.0, **kw):
  metrics = {"fd": fd, "accuracy": 0.9, "precision": 0.8, "recall": 0.6, "bound_value": 3.0}
  return _row(seed=seed, unpaired_weight=weight, metrics=metrics, **kw)


def test_mean_std_is_the_sample_std_of_the_finite_values():
  assert sweep_report.mean_std([1.0, 3.0], "{:.2f}") == "2.00 ± 1.41"
  assert sweep_report.mean_std([2.0, float("nan"), None], "{:.1f}") == "2.0"
  assert sweep_report.mean_std([]) == "—"


def test_extension_is_compared_with_the_paper_at_the_same_seeds():
  rows = [_lsdm(0, 20.0), _lsdm(1, 22.0), _lsdm(2, 30.0)]
  rows += [_lsdm(0, 18.0, 0.5), _lsdm(1, 21.0, 0.5), _lsdm(2, 0.0, 0.5, status="failed")]
  table = sweep_report.extension_table(rows)
  # Seeds 0 and 1 only (seed 2 failed): ΔFD -2 and -1.
  assert "| critic | 500 | 3500 | 0.5 | 2/3 | 21.00 ± 1.41 | 19.50 ± 2.12 | -1.50 ± 0.71 |" in table
  grid = sweep_report.grid_table(rows)
  assert "| critic | 500 | 3500 | 0 | 3/3 | 24.00 ± 5.29 |" in grid
  assert "| critic | 500 | 3500 | 0.5 | 2/3 | 19.50 ± 2.12 |" in grid
  text = sweep_report.markdown(rows)
  assert "## Failed or pending runs" in text and "NonFiniteError: stage2 step 3" in text


def test_speed_ratio_uses_the_step_count_closest_in_fd(tmp_path):
  rows = [_lsdm(0, 20.0, name="lsdm_ref")]
  for steps, fd, seconds, closest in ((10, 40.0, 0.5, False), (50, 21.0, 2.5, True)):
    metrics = {
      "fd": fd,
      "accuracy": 0.9,
      "precision": 0.7,
      "recall": 0.6,
      "generate_seconds_per_1000": seconds,
      "reference_generate_seconds_per_1000": 0.025,
      "reference_fd": 20.0,
      "speed_ratio": seconds / 0.025,
      "decode_seconds_per_1000": 0.02,
      "latent_speed_ratio": (seconds - 0.02) / (0.025 - 0.02),
    }
    rows.append(
      _row(
        "latent_diffusion",
        ddim_steps=steps,
        reference_run="lsdm_ref",
        closest_to_reference_fd=closest,
        metrics=metrics,
      )
    )
  table, summary = sweep_report.speed_table(rows)
  assert "| 500 | 0 | lsdm_ref | 20.00 | 0.025 | 50 | 21.00 | 2.5 | 100x | 496x |" in table
  assert "**Speed ratio: 100x**" in summary and "meets the claimed 50x" in summary
  methods = sweep_report.method_table(rows, 500)
  assert "latent diffusion, DDIM 10 steps" in methods and "LSDM (critic, 3500 unpaired)" in methods
  paths = sweep_report.save_plots(rows, tmp_path)
  assert [p.name for p in paths] == ["fd_vs_unpaired.png", "precision_vs_unpaired.png"]
  assert all(p.stat().st_size > 0 for p in paths)


@pytest.mark.parametrize("ratio, verdict", [(49.0, "does not meet"), (50.0, "meets")])
def test_speed_verdict_against_the_claim(ratio, verdict):
  metrics = {
    "fd": 1.0,
    "generate_seconds_per_1000": ratio,
    "reference_generate_seconds_per_1000": 1.0,
    "reference_fd": 1.0,
    "speed_ratio": ratio,
  }
  row = _row("latent_diffusion", ddim_steps=10, reference_run="r", closest_to_reference_fd=True)
  row["metrics"] = metrics
  _, summary = sweep_report.speed_table([row])
  assert f"{verdict} the claimed 50x" in summary
