"""experiments.report: its tables and arithmetic on hand-made rows (no training)."""

import pytest

from experiments import report


def _row(setting, seed, status="ok", kind="lsdm", compare=None, **metrics):
  return {
    "name": f"{setting}_s{seed}",
    "run": f"{setting}_s{seed}",
    "setting": setting,
    "kind": kind,
    "seed": seed,
    "fields": {},
    "compare": compare,
    "status": status,
    "error": None if status == "ok" else "NonFiniteError: stage2 step 3",
    "metrics": metrics if status == "ok" else {},
  }


def test_mean_std_is_the_sample_std_of_the_finite_values():
  assert report.mean_std([1.0, 3.0], "{:.2f}") == "2.00 ± 1.41"
  assert report.mean_std([2.0, float("nan"), None], "{:.1f}") == "2.0"
  assert report.mean_std([]) == "—"
  assert report.mean_std([-1.0, -2.0], "{:+.2f}") == "-1.50 ± 0.71"


def test_a_setting_is_compared_with_its_reference_at_the_same_seeds():
  rows = [_row("paper", s, fd=fd, accuracy=0.9) for s, fd in ((0, 20.0), (1, 22.0), (2, 30.0))]
  rows += [_row("ext", 0, compare="paper", fd=18.0), _row("ext", 1, compare="paper", fd=21.0)]
  rows.append(_row("ext", 2, status="failed", compare="paper"))
  text = report.markdown(rows)
  assert "| paper | 3/3 | 24.00 ± 5.29 | 0.900 ± 0.000 |" in text
  # Seeds 0 and 1 only (seed 2 failed): ΔFD -2 and -1.
  assert "| ext | 2/3 | 19.50 ± 2.12 | — | -1.50 ± 0.71 (vs paper) |" in text
  assert "## Failed or pending runs" in text and "NonFiniteError: stage2 step 3" in text


def _ldm(steps, fd, seconds, closest=False):
  row = _row(f"ld_ddim{steps}", 0, kind="latent_diffusion", fd=fd)
  row["metrics"].update(
    generate_seconds_per_1000=seconds,
    reference_fd=20.0,
    reference_generate_seconds_per_1000=0.05,
    speed_ratio=seconds / 0.05,
    latent_speed_ratio=None,
  )
  return {**row, "ddim_steps": steps, "closest_to_reference_fd": closest}


def test_speed_ratio_is_read_at_the_step_count_closest_in_fd():
  rows = [_row("lsdm", 0, fd=20.0), _ldm(10, 40.0, 0.5), _ldm(50, 21.0, 2.5, closest=True)]
  table, summary = report.speed_table(rows)
  assert "**Speed ratio: 50x**" in summary and "meets the claimed 50x" in summary
  assert "| ld_ddim50_s0 | 20.00 | 0.05 | 50 | 21.00 | 2.5 | 50x | — |" in table
  assert table.count("\n") == 3  # Head, separator, the one closest row.


@pytest.mark.parametrize("seconds, verdict", [(2.5, "meets"), (1.0, "does not meet")])
def test_speed_verdict_against_the_claim(seconds, verdict):
  _, summary = report.speed_table([_ldm(50, 21.0, seconds, closest=True)])
  assert f"smallest ratio {verdict} the claimed" in summary


def test_no_latent_diffusion_says_so():
  assert report.speed_table([_row("lsdm", 0, fd=1.0)]) == (
    "",
    "No latent-diffusion run finished, so no speed ratio was measured.\n",
  )


def test_superres_rows_get_the_superres_columns():
  rows = [_row("lsdm", 0, psnr=17.2, ssim=0.75, consistency=26.4, fd=15.9)]
  text = report.markdown(rows)
  assert "PSNR (dB) ↑" in text and "| lsdm | 1/1 | 17.20 | 0.750 | 26.40 | 15.9 |" in text
  assert "accuracy" not in text


def test_plots_are_drawn_only_where_the_runs_vary_n_unpaired(tmp_path):
  rows = []
  for u in (0, 300):
    for variant in ("critic", "sinkhorn"):
      r = _row(f"{variant}_u{u}", 0, fd=10.0 - u / 100, precision=0.8)
      rows.append({**r, "variant": variant, "fields": {"data.n_unpaired": u}})
  paths = report.save_plots(rows, tmp_path)
  assert [p.name for p in paths] == ["fd_vs_unpaired.png", "precision_vs_unpaired.png"]
  assert all(p.read_bytes()[:4] == b"\x89PNG" for p in paths)
  assert report.save_plots([r for r in rows if r["fields"]["data.n_unpaired"] == 0], tmp_path) == []
