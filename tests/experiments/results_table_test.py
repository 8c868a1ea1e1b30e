"""`python -m experiments.results_table`: one row per finished run, one error line otherwise."""

import json

import pytest

from experiments import results_table


def _run(path, accuracy, fd=20.0):
  path.mkdir()
  metrics = {key: 0.5 for key, _, _ in results_table.COLUMNS}
  metrics["accuracy"] = accuracy
  metrics["fd"] = fd
  metrics["timings"] = {key: 12.4 for key, _ in results_table.TIMES}
  (path / "metrics.json").write_text(json.dumps(metrics))
  (path / "config.json").write_text(json.dumps({"stage2": {"estimator": "sinkhorn"}}))
  return path


def test_rows_follow_the_arguments(tmp_path, capsys):
  a, b = _run(tmp_path / "a", 0.9614), _run(tmp_path / "b", 0.5)
  results_table.main(["results_table", str(a), str(b)])
  lines = capsys.readouterr().out.splitlines()
  assert len(lines) == 4 and lines[0].startswith("| run | estimator | accuracy")
  assert lines[2].startswith("| a | sinkhorn | 0.961 |") and lines[2].endswith("| 12 | 12 | 12 |")
  assert lines[3].startswith("| b | sinkhorn | 0.500 |")


def test_an_unfinished_run_is_one_error_line_and_nothing_printed(tmp_path, capsys):
  a = _run(tmp_path / "a", 0.9)
  (tmp_path / "unfinished").mkdir()
  with pytest.raises(SystemExit) as e:
    results_table.main(["results_table", str(a), str(tmp_path / "unfinished")])
  assert str(e.value).startswith("error: cannot read") and "experiments.main" in str(e.value)
  assert capsys.readouterr().out == ""


def test_seeds_groups_consecutive_workdirs_into_one_row_each(tmp_path, capsys):
  runs = [_run(tmp_path / f"a_s{i}", 0.9, fd) for i, fd in enumerate((20.0, 22.0, 24.0))]
  runs += [_run(tmp_path / f"b_s{i}", 0.8, 30.0) for i in range(3)]
  for i, run in enumerate(runs[:3]):
    (run / "metrics_unpaired.json").write_text(json.dumps({"fd": 10.0 + i}))
  results_table.main(["results_table", "--seeds=3", *map(str, runs)])
  lines = capsys.readouterr().out.splitlines()
  assert len(lines) == 4 and lines[0].startswith("| runs | FD | FD, unpaired reference |")
  cells = [c.strip() for c in lines[2].strip("|").split("|")]
  assert cells[:3] == [
    "a_s*",
    "20.00 / 22.00 / 24.00 = 22.00 ± 2.00",
    "10.00 / 11.00 / 12.00 = 11.00 ± 1.00",
  ]
  cells = [c.strip() for c in lines[3].strip("|").split("|")]
  assert cells[:3] == ["b_s*", "30.00 / 30.00 / 30.00 = 30.00 ± 0.00", "—"]  # No unpaired metrics.


@pytest.mark.parametrize("flag", ["--seeds=2", "--seeds=0", "--seeds=x"])
def test_seeds_that_do_not_divide_the_workdirs_is_one_error_line(tmp_path, capsys, flag):
  runs = [str(_run(tmp_path / f"a_s{i}", 0.9)) for i in range(3)]
  with pytest.raises(SystemExit) as e:
    results_table.main(["results_table", flag, *runs])
  assert str(e.value).startswith("error: --seeds=K needs a whole number K >= 1 dividing the 3")
  assert capsys.readouterr().out == ""
