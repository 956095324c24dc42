"""notebooks/ run headless, top to bottom, in the venv's python3 kernel, and carry no outputs.

Each notebook executes in its own temporary working folder (what it writes stays there) with
its parameter cell overridden papermill-style by an injected cell, so the sizes CI runs are set
here. No network: the notebooks only use built-in synthetic data.
"""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"

#: Parameters injected after each notebook's ``parameters`` cell (papermill's convention).
SMALL: dict[str, dict[str, object]] = {
    "01_quickstart.ipynb": {"steps": 6, "batch_size": 4, "num_points": 256, "npoints": 128},
    "02_results.ipynb": {"seeds": 3, "folds": 3},
    "03_custom_data.ipynb": {"per_class": 8, "num_classes": 3, "num_points": 256, "npoints": 128},
}

#: Seconds one cell may take before the run fails (the notebooks take seconds in total).
CELL_TIMEOUT = 120


def notebook_paths() -> list[Path]:
    return sorted(NOTEBOOKS.glob("*.ipynb"))


def test_every_notebook_is_listed_with_a_parameters_cell():
    assert [p.name for p in notebook_paths()] == sorted(SMALL)
    for path in notebook_paths():
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1, f"{path.name}: expected one cell tagged 'parameters'"
        first_code = next(c for c in nb.cells if c.cell_type == "code")
        assert first_code is tagged[0], f"{path.name}: the parameters cell must come first"
        for name in SMALL[path.name]:
            assert f"{name} = " in tagged[0].source, f"{path.name} has no parameter {name!r}"


@pytest.mark.parametrize("path", notebook_paths(), ids=lambda p: p.name)
def test_notebooks_are_committed_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{path.name} cell {i} has outputs: strip them"
            assert cell.execution_count is None, f"{path.name} cell {i} has an execution count"


def test_python3_kernel_is_this_interpreter():
    """nbclient starts the kernel spec ``python3``; ipykernel's spec runs ``sys.executable``."""
    try:
        spec = KernelSpecManager().get_kernel_spec("python3")
    except NoSuchKernel:
        pytest.fail("no 'python3' Jupyter kernel: install the dev extra (ipykernel)")
    assert spec.argv[0] in ("python", "python3") or Path(spec.argv[0]).exists()


def inject(nb: nbformat.NotebookNode, values: dict[str, object]) -> None:
    """Insert a cell setting ``values`` right after the ``parameters`` cell."""
    index = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    source = "\n".join(f"{k} = {v!r}" for k, v in values.items())
    cell = nbformat.v4.new_code_cell(source, metadata={"tags": ["injected-parameters"]})
    nb.cells.insert(index + 1, cell)


@pytest.mark.parametrize("path", notebook_paths(), ids=lambda p: p.name)
def test_notebook_runs_headless(path, tmp_path, monkeypatch):
    nb = nbformat.read(path, as_version=4)
    inject(nb, SMALL[path.name])
    # The kernel inherits this environment: no hub or wandb traffic, a non-GUI backend.
    for key, value in {"HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "2"))
    client = NotebookClient(
        nb,
        timeout=CELL_TIMEOUT,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()  # raises CellExecutionError, with the cell and its traceback, on any error
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in errors if o.get("output_type") == "error"]
