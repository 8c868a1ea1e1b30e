"""`python -m experiments.results_table`: one row per finished run, one error line otherwise."""

import json

import pytest

from experiments import results_table


def _run(path, accuracy):
  path.mkdir()
  metrics = {key: 0.5 for key, _, _ in results_table.COLUMNS}
  metrics["accuracy"] = accuracy
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
