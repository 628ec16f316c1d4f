"""Every notebook in notebooks/ executes top to bottom (offline, on a kernel running this interpreter)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from hf_ext.testing import time_factor

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
KERNEL_NAME = "hf-ext-test-python"
# A hang guard, not a speed claim: generous, and scaled by the machine's load (hf_ext.testing.time_factor).
CELL_TIMEOUT_S = 300

# What the kernel sees: offline Hub, quiet tokenizers.
KERNEL_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "MPLBACKEND": "Agg",
}


def test_notebooks_exist():
    assert NOTEBOOKS, f"no notebooks found in {NOTEBOOK_DIR}: the notebook tests would silently test nothing"


@pytest.fixture(scope="module")
def kernel_dirs(tmp_path_factory):
    """A kernelspec that runs ``sys.executable -m ipykernel_launcher`` with :data:`KERNEL_ENV`.

    Written to a temporary folder and found through ``JUPYTER_PATH``, under a name no installed kernel uses,
    so the kernel is this venv's interpreter whatever kernels the machine has installed.
    """
    from ipykernel.kernelspec import write_kernel_spec

    data_dir = tmp_path_factory.mktemp("jupyter")
    spec_dir = data_dir / "kernels" / KERNEL_NAME
    write_kernel_spec(str(spec_dir), overrides={"display_name": "hf-ext tests", "env": KERNEL_ENV})
    kernel_json = (spec_dir / "kernel.json").read_text()
    assert sys.executable.replace("\\", "\\\\") in kernel_json, kernel_json
    return data_dir


@pytest.mark.slow
@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_executes(notebook, kernel_dirs, tmp_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("JUPYTER_PATH", str(kernel_dirs))
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))  # no user profile/startup files
    workdir = tmp_path / "notebooks"
    shutil.copytree(NOTEBOOK_DIR, workdir, ignore=shutil.ignore_patterns("runs", ".ipynb_checkpoints"))
    nb = nbformat.read(workdir / notebook.name, as_version=4)
    client = NotebookClient(nb, kernel_name=KERNEL_NAME, timeout=int(CELL_TIMEOUT_S * time_factor()),
                            resources={"metadata": {"path": str(workdir)}})
    client.execute()  # raises CellExecutionError (with the cell's traceback) if a cell fails
    errors = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors
