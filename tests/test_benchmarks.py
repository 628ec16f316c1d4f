"""The benchmark harness (benchmarks/_timing.py) and every benchmark script's --quick smoke test."""

from __future__ import annotations

import importlib.util
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hf_ext.testing import time_factor

BENCH_DIR = Path(__file__).resolve().parents[1] / "benchmarks"
SCRIPTS = sorted(p for p in BENCH_DIR.glob("*.py") if not p.name.startswith("_"))


def _load_timing():
    spec = importlib.util.spec_from_file_location("_timing", BENCH_DIR / "_timing.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("_timing", module)
    spec.loader.exec_module(module)
    return module


timing = _load_timing()


# ------------------------------------------------------------------------------------- every script, --quick


def test_benchmark_scripts_exist():
    assert SCRIPTS, f"no benchmark scripts in {BENCH_DIR}: the smoke tests would silently test nothing"


#: CPU seconds a --quick run may use (imports of torch/transformers/datasets ≈ 5-8 s + ≤ 10 s of work, with margin for
#: a slower CPU). CPU time, not wall time: a loaded machine stretches the wall clock, not the work.
QUICK_CPU_LIMIT_S = 40


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@pytest.mark.slow
@pytest.mark.parametrize("script", SCRIPTS, ids=[p.stem for p in SCRIPTS])
def test_quick_mode_runs_and_appends_a_json_row(script, tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    cpu_before = _children_cpu_s()
    # The wall-clock timeout only guards against a hang (scaled by the machine's load, hf_ext.testing.time_factor).
    proc = subprocess.run([sys.executable, str(script), "--quick", "--out", str(out)], capture_output=True, text=True,
                          timeout=600 * time_factor(), cwd=tmp_path, env=env)
    cpu_s = _children_cpu_s() - cpu_before
    assert proc.returncode == 0, f"{script.name} --quick failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert cpu_s < QUICK_CPU_LIMIT_S, f"{script.name} --quick used {cpu_s:.1f} s of CPU (limit {QUICK_CPU_LIMIT_S} s)"
    rows = [json.loads(line) for path in out.glob("*.jsonl") for line in path.read_text().splitlines() if line.strip()]
    assert rows, f"{script.name} --quick wrote no JSON row under --out {out}; files: {list(out.glob('*'))}"
    for row in rows:
        assert row["machine"]["cpu_count"] >= 1 and "torch" in row["machine"] and row["timestamp"]
    assert proc.stdout.strip(), "a benchmark prints its ratio rows"


# ------------------------------------------------------------------------------------- time_ab with a fake clock


class FakeClock:
    """A clock that only moves when a fake arm 'runs' (advances it by a scripted duration)."""

    def __init__(self):
        self.now = 1000.0
        self.reads = 0

    def __call__(self):
        self.reads += 1
        return self.now


def _fake_arms(clock, durations_a, durations_b):
    calls = []
    it_a, it_b = iter(durations_a), iter(durations_b)

    def fn_a():
        calls.append("a")
        clock.now += next(it_a)

    def fn_b():
        calls.append("b")
        clock.now += next(it_b)

    return fn_a, fn_b, calls


def test_time_ab_alternates_and_computes_medians_iqr_ratio():
    clock = FakeClock()
    warm_a, warm_b = [100.0, 100.0], [200.0, 200.0]  # warm-up durations must not be counted
    timed_a, timed_b = [3.0, 1.0, 4.0, 1.0, 5.0], [6.0, 2.0, 8.0, 2.0, 10.0]
    fn_a, fn_b, calls = _fake_arms(clock, warm_a + timed_a, warm_b + timed_b)
    res = timing.time_ab(fn_a, fn_b, repeats=5, warmup=2, label_a="base", label_b="ours", clock=clock)

    assert calls == ["a", "b"] * 7  # A, B, A, B … for warm-up and timed runs alike
    assert clock.reads == 2 * 2 * 5  # the clock is read only around timed calls
    assert res["times_a_s"] == timed_a and res["times_b_s"] == timed_b
    # independent reference: numpy's median and (linear) percentiles
    assert res["median_a_s"] == pytest.approx(np.median(timed_a)) == pytest.approx(3.0)
    assert res["median_b_s"] == pytest.approx(np.median(timed_b)) == pytest.approx(6.0)
    assert res["iqr_a_s"] == pytest.approx(np.subtract(*np.percentile(timed_a, [75, 25]))) == pytest.approx(3.0)
    assert res["iqr_b_s"] == pytest.approx(np.subtract(*np.percentile(timed_b, [75, 25]))) == pytest.approx(6.0)
    assert res["ratio_b_over_a"] == pytest.approx(2.0)
    assert res["faster"] == "base" and res["speedup"] == pytest.approx(2.0)
    assert "< 1 means ours is faster" in res["note"]
    row = timing.format_ab(res, case="x")
    assert "ours/base = 2.000" in row and "base faster ×2.00" in row


def test_time_ab_b_faster_and_even_counts():
    clock = FakeClock()
    timed_a, timed_b = [4.0, 2.0, 8.0, 6.0], [1.0, 3.0, 2.0, 4.0]
    fn_a, fn_b, calls = _fake_arms(clock, timed_a, timed_b)
    res = timing.time_ab(fn_a, fn_b, repeats=4, warmup=0, clock=clock)
    assert calls == ["a", "b"] * 4
    assert res["median_a_s"] == pytest.approx(5.0) and res["median_b_s"] == pytest.approx(2.5)
    assert res["iqr_a_s"] == pytest.approx(np.subtract(*np.percentile(timed_a, [75, 25])))
    assert res["ratio_b_over_a"] == pytest.approx(0.5) and res["faster"] == "b" and res["speedup"] == pytest.approx(2.0)


@pytest.mark.parametrize("kwargs, match", [
    ({"repeats": 0}, "repeats=0"),
    ({"warmup": -1}, "warmup=-1"),
    ({"label_a": "x", "label_b": "x"}, "different names"),
])
def test_time_ab_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        timing.time_ab(lambda: None, lambda: None, **{"repeats": 2, "warmup": 0, **kwargs})


# ------------------------------------------------------------------------------------- JSON rows, options


def test_append_json_row_adds_machine_and_appends(tmp_path):
    p1 = timing.append_json_row("demo", {"benchmark": "demo", "ratio": 0.5}, out=tmp_path)
    p2 = timing.append_json_row(tmp_path / "demo.jsonl", {"benchmark": "demo", "ratio": 0.7})
    assert p1 == p2 == tmp_path / "demo.jsonl"
    rows = [json.loads(line) for line in p1.read_text().splitlines()]
    assert [r["ratio"] for r in rows] == [0.5, 0.7]
    assert rows[0]["machine"]["cpu_count"] == os.cpu_count() and rows[0]["machine"]["torch"]
    assert timing.results_path("x") == timing.RESULTS_DIR / "x.jsonl"
    with pytest.raises(ValueError, match="neither a bare benchmark name"):
        timing.results_path("some/dir/name")


def test_common_argparser():
    args = timing.common_argparser("demo").parse_args(["--quick", "--device", "cuda", "--out", "x"])
    assert args.quick and args.device == "cuda" and args.out == Path("x") and args.repeats is None
    defaults = timing.common_argparser("demo").parse_args([])
    assert not defaults.quick and defaults.device == "cpu" and defaults.out == timing.RESULTS_DIR


# ------------------------------------------------------------------------------------- peak memory


ARM_SOURCE = '''
LOADED = bytearray(b"\\x01") * (150 * 1024 * 1024)  # a big "model load": must not count towards the arm


def setup(mb):
    return mb


def run(mb):
    buf = bytearray(b"\\x01") * (mb * 1024 * 1024)  # touches every page
    return len(buf)
'''


@pytest.mark.parametrize("method", ["auto", "sampled"])
def test_peak_rss_detects_an_allocation_above_the_loaded_baseline(tmp_path, method):
    arm = tmp_path / "arm.py"
    arm.write_text(ARM_SOURCE)
    res = timing.measure_peak(timing.ArmSpec(str(arm), setup="setup", run="run", kwargs={"mb": 100}), method=method)
    assert 60 < res["peak_mb"] < 400, res
    assert res["baseline_mb"] > 150, res  # the load happened before the baseline
    if method == "auto" and sys.platform == "linux":
        assert res["method"] == "vmhwm"


def test_peak_rss_string_spec_and_errors(tmp_path):
    arm = tmp_path / "arm.py"
    arm.write_text("def run():\n    return bytearray(b'\\x01') * (20 * 1024 * 1024)\n")
    assert 10 < timing.peak_rss_mb(f"{arm}:run") < 60  # ~20 MB, no setup
    with pytest.raises(ValueError, match="not valid"):
        timing.ArmSpec.parse("just_a_name")
    with pytest.raises(RuntimeError, match="failed"):
        timing.peak_rss_mb(f"{arm}:missing_function")


def test_peak_rss_times_out(tmp_path):
    arm = tmp_path / "arm.py"
    arm.write_text("import time\n\n\ndef run():\n    time.sleep(30)\n")
    with pytest.raises(RuntimeError, match="timed out after 1 s"):
        timing.peak_rss_mb(f"{arm}:run", timeout=1)
