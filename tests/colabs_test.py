"""The notebooks in colabs/ run top to bottom (headless, with LSDM_NOTEBOOK_TINY=1).

Each notebook executes in a fresh kernel (nbclient) whose working directory is a temporary
directory, so the runs it trains land there. The kernel gets one CPU device (figures go
inline, as PNG outputs); the notebooks are committed without outputs, and this checks that too.
"""

import importlib.util
import pathlib
import subprocess

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

COLABS = pathlib.Path(__file__).resolve().parents[1] / "colabs"
NOTEBOOKS = sorted(p.name for p in COLABS.glob("*.ipynb"))
TIMEOUT = 600  # Seconds per cell; a loaded 2-core machine is slow.


def test_every_notebook_is_tested():
  assert NOTEBOOKS == ["quickstart.ipynb", "semi_supervised.ipynb", "superres.ipynb"]


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_is_committed_without_outputs(name):
  nb = nbformat.read(COLABS / name, as_version=4)
  for cell in nb.cells:
    if cell.cell_type == "code":
      assert not cell.outputs and cell.execution_count is None, cell.source[:60]


def _setup_cell(name: str) -> str:
  nb = nbformat.read(COLABS / name, as_version=4)
  return next(c.source for c in nb.cells if c.cell_type == "code")


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_the_first_code_cell_installs_lsdm_jax_only_where_it_is_missing(
  name, monkeypatch, tmp_path
):
  calls = []
  monkeypatch.setattr(subprocess, "run", lambda cmd, **kw: calls.append(cmd))
  exec(_setup_cell(name), {})  # Here lsdm_jax is installed: nothing runs.
  assert calls == []
  real_find_spec = importlib.util.find_spec
  monkeypatch.setattr(
    importlib.util,
    "find_spec",
    lambda mod, *a: None if mod == "lsdm_jax" else real_find_spec(mod, *a),
  )
  monkeypatch.chdir(COLABS)  # Opened from a clone: installs that clone.
  exec(_setup_cell(name), {})
  assert calls[-1][1:5] == ["-m", "pip", "install", "-q"]
  assert calls[-1][5:] == ["-e", str(COLABS.parent)]
  monkeypatch.chdir(tmp_path / "..")  # Elsewhere: from the repository URL, when one is set.
  monkeypatch.setenv("LSDM_JAX_REPOSITORY", "https://example.org/lsdm-jax.git")
  exec(_setup_cell(name), {})
  assert calls[-1][5:] == ["git+https://example.org/lsdm-jax.git"]
  monkeypatch.delenv("LSDM_JAX_REPOSITORY")
  with pytest.raises(RuntimeError, match="set REPOSITORY to the repository's git URL"):
    exec(_setup_cell(name), {})
  assert len(calls) == 2


def execute(
  name: str, cwd: pathlib.Path, cache: pathlib.Path, monkeypatch
) -> nbformat.NotebookNode:
  # The kernel inherits the environment at start: set it before execute().
  monkeypatch.setenv("LSDM_NOTEBOOK_TINY", "1")
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  # One device (conftest's 8 would only slow the kernel), and a compilation cache shared by
  # the notebooks' runs (their tiny configs compile the same programs) at a low XLA
  # optimisation level: the tiny runs are mostly compilation.
  monkeypatch.setenv("XLA_FLAGS", "--xla_backend_optimization_level=0")
  monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(cache))
  monkeypatch.setenv("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
  monkeypatch.setenv("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
  # The notebooks `import lsdm_jax` (installed) and nothing from the repository root.
  nb = nbformat.read(COLABS / name, as_version=4)
  client = NotebookClient(
    nb,
    timeout=TIMEOUT,
    kernel_name="python3",
    resources={"metadata": {"path": str(cwd)}},
  )
  try:
    client.execute()
  except CellExecutionError as e:
    pytest.fail(f"{name} raised {e.ename}: {e.evalue}")
  return nb


@pytest.fixture(scope="module")
def compile_cache(tmp_path_factory):
  return tmp_path_factory.mktemp("xla_cache")


def test_quickstart(tmp_path, compile_cache, monkeypatch):
  nb = execute("quickstart.ipynb", tmp_path, compile_cache, monkeypatch)
  run = tmp_path / "runs" / "quickstart_tiny"
  assert (run / "samples" / "grid.png").exists()
  images = [
    o
    for c in nb.cells
    if c.cell_type == "code"
    for o in c.outputs
    if "image/png" in o.get("data", {})
  ]
  assert len(images) >= 4  # Curves, samples, reconstructions, latent PCA.


@pytest.mark.slow  # Two tiny runs; the quickstart and superres notebooks run by default.
def test_semi_supervised(tmp_path, compile_cache, monkeypatch):
  nb = execute("semi_supervised.ipynb", tmp_path, compile_cache, monkeypatch)
  root = tmp_path / "runs" / "semi_supervised_tiny"
  for n in (0, 300):
    assert (root / f"unpaired_{n}" / "metrics.json").exists()
  text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
  assert "accuracy" in text and "paired + unpaired" in text


@pytest.mark.slow  # tests/train_superres_test.py runs the same pipeline by default.
def test_superres(tmp_path, compile_cache, monkeypatch):
  nb = execute("superres.ipynb", tmp_path, compile_cache, monkeypatch)
  assert (tmp_path / "runs" / "superres_tiny" / "metrics.json").exists()
  outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
  assert sum("image/png" in o.get("data", {}) for o in outputs) >= 2  # Samples, spread.
  text = "".join(o.get("text", "") for o in outputs)
  assert "consistency" in text and "LSDM (one sample)" in text and "psnr" in text
