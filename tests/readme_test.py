"""The README's "Python API" snippet runs as written against a trained tiny run.

The snippet loads `runs/mnist5k_classcond`; here that directory is a run of
`experiments/configs/test.py` (trained once for the module, without metrics) inside a
temporary directory that the snippet runs in.
"""

import pathlib
import re

import pytest

import lsdm_jax
from experiments.configs import test as test_config

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def section_snippets(title: str) -> list[str]:
  """The ```python blocks of the README section `## title`."""
  text = README.read_text()
  match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.M | re.S)
  assert match, f"README has no section {title!r}"
  return re.findall(r"^```python\n(.*?)^```", match.group(1), re.M | re.S)


@pytest.fixture(scope="module")
def run_root(tmp_path_factory):
  root = tmp_path_factory.mktemp("readme")
  config = test_config.get_config()
  config.eval.enabled = False
  lsdm_jax.train_and_evaluate(config, root / "runs" / "mnist5k_classcond")
  return root


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
