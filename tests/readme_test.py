"""The README's "Python API" snippet runs as written against a trained tiny run.

The snippet loads `runs/mnist5k_classcond`; here that directory is a copy of the
session's tiny run of `experiments/configs/test.py` (tests/conftest.py) inside a temporary
directory that the snippet runs in.
"""

import pathlib
import re
import shutil

import pytest

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def section_snippets(title: str) -> list[str]:
  """The ```python blocks of the README section `## title`."""
  text = README.read_text()
  match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.M | re.S)
  assert match, f"README has no section {title!r}"
  return re.findall(r"^```python\n(.*?)^```", match.group(1), re.M | re.S)


@pytest.fixture
def run_root(tiny_run, tmp_path):
  _, workdir, _ = tiny_run
  shutil.copytree(workdir, tmp_path / "runs" / "mnist5k_classcond")
  return tmp_path


def test_python_api_snippet_runs(run_root, monkeypatch):
  snippets = section_snippets("Python API")
  assert len(snippets) == 1 and "lsdm_jax.load(" in snippets[0]
  monkeypatch.chdir(run_root)
  namespace = {}
  exec(compile(snippets[0], "README.md (Python API)", "exec"), namespace)
  assert namespace["again"].shape == (40, 28, 28, 1)
  assert namespace["sevens"].shape == (8, 28, 28, 1)
  assert namespace["batch"].shape == (10, 28, 28, 1)
  assert (run_root / "digits.png").stat().st_size > 0
