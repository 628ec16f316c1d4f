"""Issue 19 item 3: for every artifact hf_ext writes, an overwrite of A by B cut short by a full disk (a child process
under ``RLIMIT_FSIZE``) leaves a folder that loads as exactly A or exactly B, or raises a clear error; never a mix."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from hf_ext.testing import time_factor
from hf_ext.utils.saving import ArtifactIntegrityError

from .save_cases import CASES

CHILD = Path(__file__).with_name("save_cases.py")
pytestmark = pytest.mark.slow


def _limits(reference: Path) -> list[int]:
    """File-size limits that cut a save of B short at different points: half of B's largest file (the weights), half
    of its smallest non-empty one (the first JSON written), and one byte below each size in between."""
    sizes = sorted({p.stat().st_size for p in reference.rglob("*") if p.is_file() and p.stat().st_size > 1})
    picked = {sizes[-1] // 2, sizes[0] // 2, *(s - 1 for s in sizes[1:-1][:2])}
    return sorted(x for x in picked if x > 0)


def _load_or_error(load, path):
    try:
        return load(path)
    except ArtifactIntegrityError as err:
        return err


@pytest.mark.parametrize("case", sorted(CASES))
def test_interrupted_overwrite_leaves_old_or_new_never_a_mix(case, tmp_path):
    if case in ("sld_pipeline", "multifusion_pipeline", "mvader_pipeline"):
        pytest.importorskip("diffusers")
    build, save, load = CASES[case]
    a, b = build(0), build(1)
    save(b, tmp_path / "reference_b")
    fingerprint_b = load(tmp_path / "reference_b")
    target = tmp_path / "artifact"
    save(a, target)
    fingerprint_a = load(target)
    assert fingerprint_a != fingerprint_b, "the two seeds must give different artifacts, else the test proves nothing"
    (target / "not_ours.txt").write_text("user notes")

    limits = _limits(tmp_path / "reference_b")
    proc = subprocess.run([sys.executable, str(CHILD), case, str(target), *map(str, limits)], capture_output=True,
                          text=True, timeout=600 * time_factor(), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    failed = json.loads(proc.stdout.strip().splitlines()[-1])["failed"]
    assert failed >= 1, f"no save was cut short at limits {limits}: {proc.stderr[-2000:]}"

    after = _load_or_error(load, target)
    if isinstance(after, ArtifactIntegrityError):
        assert str(target) in str(after)
    else:
        assert after in (fingerprint_a, fingerprint_b), "an interrupted save left a silent mix of A and B"
    assert (target / "not_ours.txt").read_text() == "user notes"
    assert not [p.name for p in tmp_path.iterdir() if ".hf_ext-tmp-" in p.name], "a staging folder was left behind"

    save(b, target)  # a completed overwrite then gives exactly B
    assert load(target) == fingerprint_b
    assert (target / "not_ours.txt").read_text() == "user notes"


GREEDY_CHILD = """
import resource, signal, sys
from hf_ext.core.reference import greedy_reference
from hf_ext.tiny import tiny_causal_lm
model = tiny_causal_lm("gpt2", seed=0).eval()
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[2]), resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
try:
    greedy_reference(model, [[1, 2, 3]] * 40, max_new_tokens=6, cache_dir=sys.argv[1])
except Exception as err:
    print("cut short:", type(err).__name__, err)
    sys.exit(0)
sys.exit(5)
"""


def test_interrupted_greedy_reference_cache_is_never_read_half_written(tmp_path):
    from hf_ext.core.reference import greedy_reference
    from hf_ext.tiny import tiny_causal_lm

    cache = tmp_path / "cache"
    for limit in (64, 2048):  # the first JSON; the arrow data
        proc = subprocess.run([sys.executable, "-c", GREEDY_CHILD, str(cache), str(limit)], capture_output=True,
                              text=True, timeout=600 * time_factor())
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
        assert not list(cache.glob("greedy_reference-*")), "an interrupted cache write left an entry"
    model = tiny_causal_lm("gpt2", seed=0).eval()
    prompts = [[1, 2, 3]] * 40
    fresh = greedy_reference(model, prompts, max_new_tokens=6)["continuation_ids"]
    assert greedy_reference(model, prompts, max_new_tokens=6, cache_dir=cache)["continuation_ids"] == fresh
    (entry,) = cache.glob("greedy_reference-*")
    data = next(p for p in entry.iterdir() if p.suffix == ".arrow")
    data.write_bytes(data.read_bytes()[:-8])  # a damaged entry (e.g. written by an older hf_ext, then cut)
    assert greedy_reference(model, prompts, max_new_tokens=6, cache_dir=cache)["continuation_ids"] == fresh
