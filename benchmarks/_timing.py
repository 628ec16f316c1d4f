"""Shared harness of the ``benchmarks/`` scripts: A/B timing, JSON rows, peak memory, common options.

Every ``benchmarks/<component>_<what>.py`` imports this module (``from _timing import ...``: the script's
own folder is on ``sys.path``) and

1. parses :func:`common_argparser` options (``--quick``, ``--device``, ``--out``, ``--repeats``),
2. times the project (B) against its named baseline (A) in the same process with :func:`time_ab`,
   which alternates A, B, A, B … so that machine drift hits both arms,
3. prints one ratio row per case (:func:`format_ab`) and appends a JSON row with :func:`append_json_row`,
4. optionally measures each arm's peak memory in its own subprocess with :func:`peak_rss_mb`.

Only the standard library is imported at module level (torch is imported lazily), so the memory-measuring
subprocess starts without paying for torch unless the arm needs it.

Example:
    >>> import time
    >>> res = time_ab(lambda: time.sleep(0.001), lambda: time.sleep(0.002), repeats=5, warmup=1,
    ...               label_a="short", label_b="long")
    >>> res["faster"], res["ratio_b_over_a"] > 1
    ('short', True)
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gc
import importlib
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

#: Default folder of JSON results (gitignored): ``benchmarks/results/<name>.jsonl``.
RESULTS_DIR = Path(__file__).resolve().parent / "results"

_MB = 1024 * 1024


# ----------------------------------------------------------------------------------------------- timing


def summarize(times: Sequence[float]) -> dict[str, float]:
    """Median, first/third quartile and IQR of ``times`` (quartiles by linear interpolation, as numpy's default).

    Example:
        >>> summarize([1.0, 2.0, 3.0, 4.0, 5.0])
        {'median': 3.0, 'q1': 2.0, 'q3': 4.0, 'iqr': 2.0, 'min': 1.0, 'n': 5}
    """
    if not times:
        raise ValueError("summarize() needs at least one time, got an empty sequence")
    data = [float(t) for t in times]
    med = statistics.median(data)
    if len(data) > 1:
        q1, _, q3 = statistics.quantiles(data, n=4, method="inclusive")
    else:
        q1 = q3 = med
    return {"median": med, "q1": q1, "q3": q3, "iqr": q3 - q1, "min": min(data), "n": len(data)}


def time_ab(
    fn_a: Callable[[], Any],
    fn_b: Callable[[], Any],
    *,
    repeats: int = 20,
    warmup: int = 2,
    label_a: str = "a",
    label_b: str = "b",
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, Any]:
    """Time two zero-argument callables alternately (A, B, A, B …) and compare their medians.

    Warm-up calls alternate too and are not timed. ``fn_a`` is by convention the *baseline*, ``fn_b`` the
    project's code. On CUDA the callables must synchronize themselves (see :func:`sync`).

    Args:
        fn_a, fn_b: the two arms; their return values are ignored.
        repeats: timed calls per arm (≥ 1).
        warmup: untimed calls per arm before timing (≥ 0).
        label_a, label_b: names used in the result and the printed row.
        clock: a monotonic clock in seconds (injectable for tests).

    Returns:
        ``{"label_a", "label_b", "repeats", "warmup", "median_a_s", "median_b_s", "iqr_a_s", "iqr_b_s",
        "ratio_b_over_a", "faster", "speedup", "note", "times_a_s", "times_b_s"}``.
        ``ratio_b_over_a = median_b / median_a``: **below 1 means B is faster**. ``faster`` names the faster
        arm (``"tie"`` for equal medians) and ``speedup`` is slower median / faster median (≥ 1).

    Example:
        >>> res = time_ab(lambda: sum(range(1000)), lambda: sum(range(10)), repeats=3, warmup=0)
        >>> res["faster"]
        'b'
    """
    if not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats={repeats!r} must be an int ≥ 1")
    if not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"warmup={warmup!r} must be an int ≥ 0")
    if label_a == label_b:
        raise ValueError(f"label_a and label_b are both {label_a!r}; give the arms different names")
    for _ in range(warmup):
        fn_a()
        fn_b()
    times_a: list[float] = []
    times_b: list[float] = []
    for _ in range(repeats):
        for fn, times in ((fn_a, times_a), (fn_b, times_b)):
            start = clock()
            fn()
            times.append(clock() - start)
    sa, sb = summarize(times_a), summarize(times_b)
    ratio = sb["median"] / sa["median"] if sa["median"] > 0 else float("inf")
    if ratio < 1:
        faster, speedup = label_b, (1 / ratio if ratio > 0 else float("inf"))
    elif ratio > 1:
        faster, speedup = label_a, ratio
    else:
        faster, speedup = "tie", 1.0
    return {
        "label_a": label_a, "label_b": label_b, "repeats": repeats, "warmup": warmup,
        "median_a_s": sa["median"], "median_b_s": sb["median"], "iqr_a_s": sa["iqr"], "iqr_b_s": sb["iqr"],
        "ratio_b_over_a": ratio, "faster": faster, "speedup": speedup,
        "note": f"ratio_b_over_a = {label_b}/{label_a} median time; < 1 means {label_b} is faster",
        "times_a_s": times_a, "times_b_s": times_b,
    }


def _fmt_s(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.3f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.3f} ms"
    return f"{seconds * 1e6:.1f} µs"


def format_ab(result: dict[str, Any], case: str = "") -> str:
    """One printable ratio row of a :func:`time_ab` result.

    Example:
        >>> format_ab({"label_a": "eager", "label_b": "sdpa", "median_a_s": 0.002, "iqr_a_s": 0.0001,
        ...            "median_b_s": 0.001, "iqr_b_s": 0.0001, "ratio_b_over_a": 0.5, "faster": "sdpa",
        ...            "speedup": 2.0}, case="llama")
        'llama  eager 2.000 ms (IQR 100.0 µs)  sdpa 1.000 ms (IQR 100.0 µs)  sdpa/eager = 0.500  → sdpa faster ×2.00'
    """
    a, b = result["label_a"], result["label_b"]
    verdict = "tie" if result["faster"] == "tie" else f"{result['faster']} faster ×{result['speedup']:.2f}"
    row = (f"{a} {_fmt_s(result['median_a_s'])} (IQR {_fmt_s(result['iqr_a_s'])})  "
           f"{b} {_fmt_s(result['median_b_s'])} (IQR {_fmt_s(result['iqr_b_s'])})  "
           f"{b}/{a} = {result['ratio_b_over_a']:.3f}  → {verdict}")
    return f"{case}  {row}" if case else row


def sync(device: str | None) -> None:
    """Wait for queued CUDA work when ``device`` is a CUDA device (no-op on CPU); call it inside timed arms."""
    if device and str(device).startswith("cuda"):
        import torch

        torch.cuda.synchronize()


# ----------------------------------------------------------------------------------------------- results


def machine_info(device: str | None = None) -> dict[str, Any]:
    """CPU count and model, Python, torch version/threads and the device name (imports torch if installed).

    Example:
        >>> machine_info()["cpu_count"] >= 1
        True
    """
    info: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "cpu": _cpu_model(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": None,
        "torch_threads": None,
        "device": device or "cpu",
        "device_name": _cpu_model(),
    }
    try:
        import torch
    except ImportError:
        return info
    info["torch"] = torch.__version__
    info["torch_threads"] = torch.get_num_threads()
    if device and str(device).startswith("cuda") and torch.cuda.is_available():
        info["device_name"] = torch.cuda.get_device_name(torch.device(device))
    return info


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def results_path(name_or_path: str | os.PathLike, out: str | os.PathLike | None = None) -> Path:
    """``<out>/<name>.jsonl`` for a bare name (``out`` defaults to :data:`RESULTS_DIR`); a ``.jsonl`` path as is."""
    path = Path(name_or_path)
    if path.suffix == ".jsonl":
        return path
    if path.name != str(name_or_path) or not str(name_or_path):
        raise ValueError(f"{name_or_path!r} is neither a bare benchmark name nor a path ending in .jsonl")
    return Path(out if out is not None else RESULTS_DIR) / f"{path.name}.jsonl"


def append_json_row(path: str | os.PathLike, row: dict[str, Any], *, out: str | os.PathLike | None = None,
                    device: str | None = None) -> Path:
    """Append ``row`` as one JSON line to ``path`` (a ``.jsonl`` path, or a name → ``<out>/<name>.jsonl``).

    Adds ``"timestamp"`` (UTC, ISO 8601) and ``"machine"`` (:func:`machine_info`) unless the row has them.
    Creates the folder. Returns the file path.

    Example:
        >>> p = append_json_row("/tmp/demo.jsonl", {"benchmark": "demo", "ratio": 0.5})
        >>> json.loads(p.read_text().splitlines()[-1])["benchmark"]
        'demo'
    """
    if not isinstance(row, dict):
        raise TypeError(f"row must be a dict, got {type(row).__name__}")
    target = results_path(path, out)
    full = {"timestamp": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"), **row}
    full.setdefault("machine", machine_info(device))
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(full, default=str) + "\n")
    return target


def plot_ab(path: str | os.PathLike, cases: dict[str, dict[str, Any]], *, title: str, unit: str = "ms") -> Path | None:
    """Grouped bar chart (median, IQR whiskers) of :func:`time_ab` results per case; ``None`` without matplotlib.

    Args:
        path: the PNG to write.
        cases: case name -> :func:`time_ab` result (same labels in all cases).
        title: figure title (name the machine/device in it).
        unit: ``"ms"``, ``"s"`` or ``"us"``.
    """
    try:
        from matplotlib.figure import Figure
    except ImportError:
        print("matplotlib is not installed (pip install 'hf-ext[plots]'): no figure", file=sys.stderr)
        return None
    scale = {"s": 1.0, "ms": 1e3, "us": 1e6}[unit]
    names = list(cases)
    first = cases[names[0]]
    fig = Figure(figsize=(max(4.0, 1.2 * len(names) + 2), 3.2), dpi=100, layout="tight")
    ax = fig.add_subplot()
    width = 0.38
    for k, (key, label) in enumerate((("a", first["label_a"]), ("b", first["label_b"]))):
        xs = [i + (k - 0.5) * width for i in range(len(names))]
        meds = [cases[n][f"median_{key}_s"] * scale for n in names]
        errs = [cases[n][f"iqr_{key}_s"] * scale / 2 for n in names]
        ax.bar(xs, meds, width, yerr=errs, capsize=3, label=label)
    ax.set_xticks(range(len(names)), names)
    ax.set_ylabel(f"median time ({unit})")
    ax.set_title(title, fontsize=9)
    ax.legend()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


# ----------------------------------------------------------------------------------------------- memory


@dataclass(frozen=True)
class ArmSpec:
    """An arm to measure in its own process: ``setup(**kwargs)`` (not measured), then ``run(state)`` (measured).

    Attributes:
        target: a module (``"hf_ext.testing"``) or a Python file (``"benchmarks/core_tiny_forward.py"``;
            its folder is put on ``sys.path`` so it can ``from _timing import ...``).
        run: name of the measured function: ``run(state)`` with ``setup``'s return value, or ``run(**kwargs)``
            when there is no setup.
        setup: name of a function that imports/loads what the arm needs; the baseline is taken after it.
        kwargs: JSON-serialisable keyword arguments of ``setup`` (or of ``run`` without a setup).

    The string form ``"target:run"`` or ``"target:setup:run"`` is accepted by :func:`peak_rss_mb`.
    """

    target: str
    run: str
    setup: str | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, spec: str | ArmSpec) -> ArmSpec:
        if isinstance(spec, ArmSpec):
            return spec
        if not isinstance(spec, str):
            raise TypeError(f"an arm spec is an ArmSpec or a 'target:[setup:]run' string, got {type(spec).__name__}")
        parts = spec.split(":")
        if len(parts) == 2 and all(parts):
            return cls(target=parts[0], run=parts[1])
        if len(parts) == 3 and all(parts):
            return cls(target=parts[0], setup=parts[1], run=parts[2])
        raise ValueError(f"arm spec {spec!r} is not valid; use 'module_or_file:run' or 'module_or_file:setup:run'")


def measure_peak(spec: str | ArmSpec, *, device: str = "cpu", timeout: float = 300.0,
                 method: str = "auto", env: dict[str, str] | None = None) -> dict[str, Any]:
    """Peak memory of one arm, measured in a fresh subprocess: see :func:`peak_rss_mb`.

    Args:
        spec: an :class:`ArmSpec` or ``"target:run"`` / ``"target:setup:run"``.
        device: ``"cpu"`` or a CUDA device.
        timeout: seconds before the subprocess is killed (then ``RuntimeError``).
        method: ``"auto"``, or ``"sampled"`` to force the portable CPU method (for tests).
        env: extra environment variables of the subprocess.

    Returns:
        ``{"peak_mb", "baseline_mb", "method", "device"}``; ``method`` is ``"vmhwm"`` (Linux: the child's
        peak-RSS counter is reset after setup), ``"sampled"`` (this process polls the child's RSS every
        0.5 ms while the arm runs) or ``"cuda_max_allocated"``.
    """
    if method not in ("auto", "sampled"):
        raise ValueError(f"method={method!r} is not valid; use 'auto' or 'sampled'")
    arm = ArmSpec.parse(spec)
    payload = json.dumps({**asdict(arm), "device": device, "cwd": os.getcwd(), "method": method})
    cmd = [sys.executable, str(Path(__file__).resolve()), "--measure-arm", payload]
    with tempfile.TemporaryFile("w+", encoding="utf-8") as err:
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True,
                                env={**os.environ, **env} if env else None)
        killed = threading.Event()

        def kill():
            killed.set()
            proc.kill()

        watchdog = threading.Timer(timeout, kill)
        watchdog.start()
        try:
            result = _drive_child(proc)
        finally:
            watchdog.cancel()
            for pipe in (proc.stdin, proc.stdout):
                pipe.close()
            proc.wait()
        if result is None or proc.returncode != 0:
            err.seek(0)
            why = f"timed out after {timeout:g} s" if killed.is_set() else f"exit {proc.returncode}"
            raise RuntimeError(f"measuring arm {arm} failed ({why}):\n{err.read()[-3000:]}")
    return result


def _drive_child(proc: subprocess.Popen) -> dict[str, Any] | None:
    """Read the child's stdout; in the sampled method, poll its RSS between its READY line and its result."""
    poller = None
    try:
        for line in proc.stdout:
            if line.startswith(_READY):  # the child has loaded and waits for us to start polling
                poller = _RssPoller(proc.pid)
                poller.start()
                proc.stdin.write("go\n")
                proc.stdin.flush()
            elif line.startswith(_MARK):
                result = json.loads(line[len(_MARK):])
                if poller is not None:
                    peak = poller.stop()
                    result.update(peak_mb=max(0, peak - poller.baseline) / _MB, baseline_mb=poller.baseline / _MB)
                return result
    finally:
        if poller is not None and poller.is_alive():
            poller.stop()
    return None


def peak_rss_mb(spec: str | ArmSpec, *, device: str = "cpu", timeout: float = 300.0,
                env: dict[str, str] | None = None) -> float:
    """Peak memory (MiB) of an arm above its post-load baseline, measured in the arm's OWN subprocess.

    The subprocess imports the target and calls ``setup`` (imports, model loading), takes the baseline,
    runs ``run`` once and reports the peak minus the baseline (first-call allocations such as cuBLAS
    workspaces or oneDNN caches included):

    - CPU, Linux: resident set size; the kernel's peak-RSS counter of the child (``VmHWM``) is reset after
      setup (``/proc/self/clear_refs``), so the load's own peak cannot hide the arm's.
    - CPU elsewhere: this process polls the child's RSS every 0.5 ms while the arm runs (needs ``psutil``
      where there is no ``/proc``). ``getrusage().ru_maxrss`` is not used: on Linux a child inherits its
      parent's peak through ``exec``.
    - CUDA (``device="cuda..."``): ``torch.cuda.max_memory_allocated()`` after ``reset_peak_memory_stats()``,
      minus the allocated memory at the baseline.

    Args:
        spec: an :class:`ArmSpec` or ``"target:run"`` / ``"target:setup:run"``.
        device: ``"cpu"`` or a CUDA device.
        timeout: seconds before the subprocess is killed (``RuntimeError``).
        env: extra environment variables of the subprocess (e.g. ``MALLOC_MMAP_THRESHOLD_``).

    Example:
        >>> peak_rss_mb(ArmSpec("benchmarks/core_tiny_forward.py", setup="load_arm", run="forward_arm",
        ...                     kwargs={"family": "llama", "attn": "sdpa", "hidden_size": 64, "num_layers": 2,
        ...                             "batch": 4, "seq": 32}))  # doctest: +SKIP
        12.5
    """
    return float(measure_peak(spec, device=device, timeout=timeout, env=env)["peak_mb"])


_MARK = "__HF_EXT_PEAK__"
_READY = "__HF_EXT_READY__"


def _rss_bytes(pid: int | None = None) -> int:
    """Current resident set size of ``pid`` (default: this process): hf_ext's reader (/proc, else psutil)."""
    from hf_ext.reproduce.memory import rss_bytes

    rss = rss_bytes(pid)
    if rss is None:
        raise RuntimeError("measuring memory without /proc needs psutil: pip install psutil")
    return rss


def _reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")
        return _hwm_bytes() is not None
    except OSError:
        return False


def _hwm_bytes() -> int | None:
    from hf_ext.reproduce.memory import hwm_bytes

    return hwm_bytes()


class _RssPoller(threading.Thread):
    """Polls another process's RSS (outside its GIL) until :meth:`stop`; ``baseline`` is the first reading."""

    def __init__(self, pid: int, interval: float = 0.0005) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.baseline = self.peak = _rss_bytes(pid)
        self._stop_event = threading.Event()

    def _read(self) -> None:
        try:
            self.peak = max(self.peak, _rss_bytes(self.pid))
        except Exception:  # noqa: BLE001 - the process may have exited
            pass

    def run(self) -> None:
        while not self._stop_event.wait(self.interval):
            self._read()

    def stop(self) -> int:
        self._stop_event.set()
        if self.is_alive():
            self.join()
        return self.peak


def _load_target(target: str):
    if target.endswith(".py") or os.sep in target or "/" in target:
        path = Path(target).resolve()
        if not path.is_file():
            raise FileNotFoundError(f"arm target file {target!r} does not exist")
        sys.path.insert(0, str(path.parent))
        spec = importlib.util.spec_from_file_location(f"_arm_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        return module
    return importlib.import_module(target)


def _measure_child(payload: str) -> None:
    spec = json.loads(payload)
    os.chdir(spec["cwd"])
    module = _load_target(spec["target"])
    run, kwargs = getattr(module, spec["run"]), spec["kwargs"]
    if spec["setup"]:
        state = getattr(module, spec["setup"])(**kwargs)

        def call():
            return run(state)
    else:

        def call():
            return run(**kwargs)

    gc.collect()
    device = spec["device"]
    result: dict[str, Any] = {"device": device}
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        call()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated(device)
        result.update(method="cuda_max_allocated", peak_mb=max(0, peak - base) / _MB, baseline_mb=base / _MB)
    elif spec["method"] == "auto" and _reset_hwm():
        base = _rss_bytes()
        call()
        peak = max(_hwm_bytes() or 0, _rss_bytes())
        result.update(method="vmhwm", peak_mb=max(0, peak - base) / _MB, baseline_mb=base / _MB)
    else:  # the parent polls our RSS from its own process between READY and our result
        print(_READY, flush=True)
        sys.stdin.readline()
        call()
        result["method"] = "sampled"
    print(_MARK + json.dumps(result), flush=True)


# ----------------------------------------------------------------------------------------------- options


class _BenchmarkParser(argparse.ArgumentParser):
    """Applies ``--threads`` (``1`` by default with ``--quick``) to torch right after parsing."""

    def parse_known_args(self, args=None, namespace=None):
        parsed, rest = super().parse_known_args(args, namespace)
        if getattr(parsed, "threads", None) is None and getattr(parsed, "quick", False):
            parsed.threads = 1
        if getattr(parsed, "threads", None) is not None:
            if parsed.threads < 1:
                self.error(f"--threads must be >= 1, got {parsed.threads}")
            import torch

            torch.set_num_threads(parsed.threads)
        return parsed, rest


def common_argparser(description: str) -> argparse.ArgumentParser:
    """The options every benchmark script takes.

    - ``--quick``: the suite's smoke test: tiny sizes, few repeats, ≤ 10 s of CPU time besides imports; no timing
      claims. It runs torch on one thread: at these sizes a second thread gains nothing, and on a busy machine
      intra-op threads that wait for each other's time slices made a quick run 10× slower (30 s instead of 3 s).
    - ``--device``: ``cpu`` (default), ``cuda``, ``cuda:N``.
    - ``--out DIR``: folder of the JSON rows and figures (default ``benchmarks/results``).
    - ``--repeats N``: override the script's number of timed calls per arm.
    - ``--threads N``: ``torch.set_num_threads(N)`` (default: torch's choice; 1 with ``--quick``).

    Example:
        >>> args = common_argparser("demo").parse_args(["--quick", "--out", "/tmp/bench"])
        >>> args.quick, str(args.out), args.threads
        (True, '/tmp/bench', 1)
    """
    parser = _BenchmarkParser(description=description)
    parser.add_argument("--quick", action="store_true", help="smoke-test sizes: ≤ 10 s of CPU time, no timing claims")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR,
                        help="folder for the JSON rows and figures (default: benchmarks/results)")
    parser.add_argument("--repeats", type=int, default=None, help="timed calls per arm (default: set by the script)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (default: torch's choice; 1 with --quick)")
    return parser


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--measure-arm":
        _measure_child(sys.argv[2])
    else:
        print("benchmarks/_timing.py is a library; run a benchmarks/<component>_<what>.py script", file=sys.stderr)
        sys.exit(2)
