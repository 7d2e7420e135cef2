"""The notebooks run: each is re-executed top to bottom by a real Jupyter kernel (nbclient), so a notebook broken
by a change in the API fails the suite. The kernel is this interpreter: a kernelspec written for the test
points at sys.executable, so a system-wide Jupyter elsewhere on the machine cannot pick another Python."""

import json
import os
import sys
from pathlib import Path

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
CELL_TIMEOUT = 600  # seconds; the whole of either notebook takes under a minute on 2 idle cores


@pytest.fixture(scope="module")
def kernel_path(tmp_path_factory):
    """A JUPYTER_PATH holding a `python3` kernelspec that starts this interpreter."""
    folder = tmp_path_factory.mktemp("jupyter")
    spec = folder / "kernels" / "python3"
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": "Python 3", "language": "python"}))
    return folder


def test_both_notebooks_are_there_and_committed_with_their_outputs():
    for name in ("seed", "beyond"):
        notebook = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
        code = [cell for cell in notebook.cells if cell.cell_type == "code"]
        assert code and all(cell.execution_count for cell in code), f"{name}.ipynb: run every cell before committing"
        figures = [output for cell in code for output in cell.outputs if "image/png" in output.get("data", {})]
        assert len(figures) >= 5, f"{name}.ipynb shows {len(figures)} figures"
        assert not [output for cell in code for output in cell.outputs if output.output_type == "error"]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["seed", "beyond", "doctor"])
def test_the_notebook_runs_from_top_to_bottom(name, kernel_path, monkeypatch):
    paths = [str(kernel_path), *filter(None, os.environ.get("JUPYTER_PATH", "").split(os.pathsep))]
    monkeypatch.setenv("JUPYTER_PATH", os.pathsep.join(paths))  # first on the path: our python3 kernelspec wins
    assert KernelSpecManager().get_kernel_spec("python3").argv[0] == sys.executable
    notebook = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    # run from the repository root, as nbclient or papermill would from a checkout: the notebooks find their
    # files from any working directory
    client = NotebookClient(
        notebook, timeout=CELL_TIMEOUT, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS.parent)}}
    )
    client.execute()  # raises CellExecutionError, naming the cell and its traceback, when any cell fails
    figures = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    assert any("image/png" in output.get("data", {}) for output in figures)
