"""The README's "Python API" snippet runs as written; the README and docs/ hold together.

The snippet loads `runs/mnist5k_classcond`; here that directory is a copy of the
session's tiny run of `experiments/configs/test.py` (tests/conftest.py) inside a temporary
directory that the snippet runs in. The README stays a short guide (at most
`MAX_README_LINES` lines), and every relative link and image in README.md and docs/*.md
names a file that exists.
"""

import pathlib
import re
import shutil

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
MAX_README_LINES = 250
# [text](target) and ![alt](target), the target up to a space, ')' or '#'.
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s#]+)(?:#[^)\s]*)?(?:\s[^)]*)?\)")


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


def test_readme_is_short():
  lines = README.read_text().splitlines()
  assert len(lines) <= MAX_README_LINES, f"README.md has {len(lines)} lines"


def local_links(page: pathlib.Path) -> list[str]:
  """The relative link and image targets of a markdown page (not URLs)."""
  targets = LINK.findall(page.read_text())
  return [t for t in targets if not re.match(r"[a-z][a-z0-9+.-]*:", t)]


@pytest.mark.parametrize("page", [README, *DOCS], ids=lambda p: p.name)
def test_links_and_images_exist(page):
  targets = local_links(page)
  missing = [t for t in targets if not (page.parent / t).exists()]
  assert not missing, f"{page.name} links to missing files: {missing}"


def test_docs_exist_and_list_the_notebooks():
  names = {p.name for p in DOCS}
  assert {"results.md", "experiments.md", "design.md", "reliability.md"} <= names
  readme_links = set(local_links(README))
  for page in ("results.md", "experiments.md", "design.md", "reliability.md"):
    assert f"docs/{page}" in readme_links, f"README does not link docs/{page}"
  for notebook in sorted((ROOT / "colabs").glob("*.ipynb")):
    assert f"colabs/{notebook.name}" in readme_links, f"README does not link {notebook}"
