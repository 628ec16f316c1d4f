"""Peak memory of a call, as ``benchmarks/_timing.py`` measures it: resident memory above a post-load baseline.

On Linux the kernel's peak-RSS counter (``VmHWM``) is reset right before the call (``/proc/self/clear_refs``) and
read after it. :func:`run_probe` runs a function in a fresh subprocess whose allocator returns freed blocks of 64 KiB
and more to the system at once (``MALLOC_MMAP_THRESHOLD_``), so that several calls measured one after the other
in that process do not hide behind each other's freed memory. Elsewhere the peaks are ``None``.

Example:
    >>> import torch
    >>> mb = peak_memory_mb(lambda: torch.ones(64, 1024, 1024).sum())  # a 256 MiB tensor
    >>> mb is None or mb > 200
    True
"""

from __future__ import annotations

import ctypes
import gc
import importlib
import json
import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any

_MB = 1024 * 1024
_MARK = "__HF_EXT_PROBE__"


def rss_bytes(pid: int | None = None) -> int | None:
    """Current resident set size in bytes of process ``pid`` (default: this one), from ``/proc``, else psutil where
    installed; ``None`` where neither is available."""
    try:
        with open(f"/proc/{pid or 'self'}/statm", encoding="ascii") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        pass
    try:
        import psutil
    except ImportError:
        return None
    return (psutil.Process(pid) if pid else psutil.Process()).memory_info().rss


def hwm_bytes() -> int | None:
    """This process's peak resident set size in bytes since the last reset (Linux ``VmHWM``); ``None`` elsewhere."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _trim() -> None:
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def peak_memory_mb(fn: Callable[[], Any]) -> float | None:
    """MiB of resident memory that ``fn()`` added at its peak above the memory before the call (``None`` where
    the platform has no ``/proc/self/clear_refs``)."""
    _trim()
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")
    except OSError:
        fn()
        return None
    base = rss_bytes()
    fn()
    peak = max(hwm_bytes() or 0, rss_bytes() or 0)
    return max(0, peak - (base or 0)) / _MB


def run_probe(target: str, kwargs: dict[str, Any], *, timeout: float = 1800.0) -> Any:
    """Call ``module:function(**kwargs)`` in a fresh Python process and return its (JSON) result.

    The function is meant to load what it needs and return :func:`peak_memory_mb` figures.

    Raises:
        RuntimeError: the subprocess failed or timed out (its stderr tail is in the message).
    """
    payload = json.dumps({"target": target, "kwargs": kwargs})
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    try:
        proc = subprocess.run([sys.executable, "-m", __name__, payload], capture_output=True, text=True, env=env,
                              timeout=timeout)
    except subprocess.TimeoutExpired as err:
        raise RuntimeError(f"memory probe {target} timed out after {timeout:g} s") from err
    for line in proc.stdout.splitlines():
        if line.startswith(_MARK):
            return json.loads(line[len(_MARK):])
    raise RuntimeError(f"memory probe {target} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")


def _main(payload: str) -> None:
    spec = json.loads(payload)
    module, _, func = spec["target"].partition(":")
    result = getattr(importlib.import_module(module), func)(**spec["kwargs"])
    print(_MARK + json.dumps(result), flush=True)


if __name__ == "__main__":
    _main(sys.argv[1])
