"""Execute the notebooks and store their outputs, and compare a fresh run with the stored outputs.

``python notebooks/execute.py [names…]`` runs each ``notebooks/*.ipynb`` top to bottom on a kernel of this interpreter
(offline, tiny models) in a scratch copy of this folder, and writes the notebook back with its outputs (the scratch
folder's path shown as ``.``; no stderr, no execution timings). ``tests/test_notebooks.py`` runs them again and compares
:func:`comparable` of both: the volatile parts are left out — stderr (progress bars, library warnings), times and
throughputs, memory addresses, timestamps, paths, and the bytes of images (their presence and type count).
"""

from __future__ import annotations

import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
KERNEL_NAME = "hf-ext-notebooks"
#: What the kernel sees: offline Hub, quiet tokenizers, plots without a display.
KERNEL_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
              "TOKENIZERS_PARALLELISM": "false", "MPLBACKEND": "Agg"}

_VOLATILE = [
    (re.compile(r"0x[0-9a-fA-F]{6,}"), "0x…"),  # object addresses
    (re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?"), "<timestamp>"),
    (re.compile(r"\d{8}-\d{6}"), "<timestamp>"),  # runs/tour-20261204-231115
    (re.compile(r"(?<![\w.])/(?:tmp|var|home|root|work|private)/[^\s'\")\]]*"), "<path>"),
    # throughputs and times: "13,049 tokens/s", "llama_forward_ms=13.79", "2.2 s", "seconds: 0.41"
    (re.compile(r"(\w*(?:per_s|_ms|_s|seconds|_time)\W{1,3})[-\d,.]+(e[-+]?\d+)?"), r"\1<n>"),
    (re.compile(r"[-\d,.]+(e[-+]?\d+)?(?=\s*(?:s|ms|µs|sec|seconds|it/s|s/it|tokens/s|tok/s|MiB|GiB|MB|GB)\b)"), "<n>"),
    # the tour's result table: its "seconds" column
    (re.compile(r"(?m)^(\S+\s+\S+\s+(?:ok|failed|skipped|slow)\s+)[\d.]+"), r"\1<n>"),
    # library versions ('transformers': '5.25.0', torch 2.13.0+cpu): the environment, not a result
    (re.compile(r"\b\d+\.\d+\.\d+(?:[.+-]\w+)*"), "<version>"),
    # table layout that follows the widths of the (volatile) numbers: rule lengths and column padding
    (re.compile(r"-{3,}"), "---"),
    (re.compile(r"(?<=\S) {2,}"), "  "),
]


def kernel_dir(root: Path) -> Path:
    """A Jupyter data folder holding a kernelspec that runs this interpreter with :data:`KERNEL_ENV`."""
    from ipykernel.kernelspec import write_kernel_spec

    write_kernel_spec(str(root / "kernels" / KERNEL_NAME), overrides={"display_name": "hf-ext", "env": KERNEL_ENV})
    return root


def execute(notebook: Path, workdir: Path, timeout: int = 600) -> Any:
    """Run ``notebook`` (its copy in ``workdir``) and return the executed ``NotebookNode``; a failing cell raises
    ``CellExecutionError``. The caller sets ``JUPYTER_PATH`` to a :func:`kernel_dir`."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(workdir / notebook.name, as_version=4)
    NotebookClient(nb, kernel_name=KERNEL_NAME, timeout=timeout, record_timing=False,
                   resources={"metadata": {"path": str(workdir)}}).execute()
    return nb


def strip_workdir(nb: Any, workdir: Path) -> Any:
    """Show the scratch folder the notebook ran in as ``.`` in its text outputs (in place; returns ``nb``)."""
    for cell in nb.cells:
        if "outputs" in cell:  # stderr holds progress bars and library warnings with this machine's paths
            cell["outputs"] = [o for o in cell["outputs"] if not (o.get("output_type") == "stream"
                                                                    and o.get("name") == "stderr")]
        for out in cell.get("outputs", []):
            if "text" in out:
                out["text"] = out["text"].replace(str(workdir), ".")
            if "text/plain" in out.get("data", {}):
                out["data"]["text/plain"] = out["data"]["text/plain"].replace(str(workdir), ".")
    return nb


def _clean(text: str) -> str:
    for pattern, repl in _VOLATILE:
        text = pattern.sub(repl, text)
    return text


def comparable(nb: Any) -> list[list[Any]]:
    """Per code cell, its outputs without the volatile parts (see the module docstring)."""
    cells = []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        outs = []
        for out in cell.get("outputs", []):
            kind = out.get("output_type")
            if kind == "stream":
                if out.get("name") == "stdout":
                    outs.append(("stdout", _clean(out.get("text", ""))))
            elif kind in ("execute_result", "display_data"):
                data = out.get("data", {})
                outs.append((kind, _clean(data.get("text/plain", "")), sorted(k for k in data if k != "text/plain")))
            elif kind == "error":
                outs.append(("error", out.get("ename")))
        # stdout may arrive in several chunks: join consecutive ones
        merged: list[Any] = []
        for o in outs:
            if merged and o[0] == "stdout" and merged[-1][0] == "stdout":
                merged[-1] = ("stdout", merged[-1][1] + o[1])
            else:
                merged.append(o)
        cells.append(merged)
    return cells


def run_and_store(names: list[str]) -> None:
    import os

    import nbformat

    notebooks = sorted(HERE.glob("*.ipynb"))
    if names:
        notebooks = [n for n in notebooks if n.stem in names]
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["JUPYTER_PATH"] = str(kernel_dir(Path(tmp) / "jupyter"))
        os.environ["IPYTHONDIR"] = str(Path(tmp) / "ipython")
        for notebook in notebooks:
            workdir = Path(tmp) / "notebooks"
            shutil.rmtree(workdir, ignore_errors=True)
            shutil.copytree(HERE, workdir, ignore=shutil.ignore_patterns("runs", ".ipynb_checkpoints"))
            nb = strip_workdir(execute(notebook, workdir), workdir)
            nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
            nbformat.write(nb, notebook)
            print("executed", notebook.name, flush=True)


if __name__ == "__main__":
    run_and_store(sys.argv[1:])
