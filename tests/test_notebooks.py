"""Every notebook in notebooks/ executes top to bottom (offline, on a kernel running this interpreter) and shows the
outputs committed with it.

The notebooks are committed executed (``python notebooks/execute.py``); a fresh run must give the same outputs up to
their volatile parts (times, throughputs, addresses, timestamps, paths, progress bars and other stderr, image bytes:
``notebooks/execute.py``'s ``comparable``)."""

from __future__ import annotations

import importlib.util
import json
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


def _outputs_module():
    spec = importlib.util.spec_from_file_location("notebook_outputs", NOTEBOOK_DIR / "execute.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_notebooks_exist():
    assert NOTEBOOKS, f"no notebooks found in {NOTEBOOK_DIR}: the notebook tests would silently test nothing"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_committed_with_its_outputs(notebook):
    cells = [c for c in json.loads(notebook.read_text(encoding="utf-8"))["cells"] if c["cell_type"] == "code"]
    unexecuted = [i for i, c in enumerate(cells) if c.get("execution_count") is None]
    assert not unexecuted, f"{notebook.name}: code cells {unexecuted} have not run: python notebooks/execute.py"
    assert any(c.get("outputs") for c in cells), f"{notebook.name} has no outputs: python notebooks/execute.py"
    assert not any(o.get("output_type") == "error" for c in cells for o in c.get("outputs", []))


def test_volatile_parts_are_ignored_and_the_rest_is_not():
    comparable = _outputs_module().comparable
    import nbformat

    def nb(text, stderr="", image=b"x"):
        cell = nbformat.v4.new_code_cell("x", outputs=[
            nbformat.v4.new_output("stream", name="stdout", text=text),
            nbformat.v4.new_output("stream", name="stderr", text=stderr),
            nbformat.v4.new_output("display_data", data={"image/png": image.hex(), "text/plain": "<Figure>"})])
        return nbformat.v4.new_notebook(cells=[cell])

    a = nb("took 2.2 s at 0x7f3a2c1d9e80, 13,049 tokens/s, llama_forward_ms=13.79, /tmp/abc/runs/tour-20261204-231115\n")
    b = nb("took 31.0 s at 0x7f0000000000, 9,001 tokens/s, llama_forward_ms=40.1, /tmp/xyz/runs/tour-20261205-000000\n",
           stderr="100%|██████| 3/3", image=b"y")
    assert comparable(a) == comparable(b)
    assert comparable(nb("loss 0.52\n")) != comparable(nb("loss 0.61\n"))  # results are compared
    assert comparable(nb("['cat', 'sat']\n")) != comparable(nb("['cat', 'mat']\n"))


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
    outputs = _outputs_module()
    fresh = outputs.comparable(outputs.strip_workdir(nb, workdir))
    committed = outputs.comparable(nbformat.read(notebook, as_version=4))
    for i, (new, old) in enumerate(zip(fresh, committed, strict=True)):
        assert new == old, f"{notebook.name}, code cell {i}: outputs differ from the committed ones\n new: {new}\n old: {old}"
