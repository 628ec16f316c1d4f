"""MAD generation speed: examples/s of each task in hf_ext's ``madlab`` and ``fast`` modes vs mad-lab's own algorithm.

Baseline (A): the reference per-example loop (``athms/mad-lab:mad/data/instances.py@0f49a45``, MIT; list-of-tuples
permutation shuffles, ``rng.choice`` per draw, global ``np.random`` insert positions), transcribed in
``tests/mad/madlab_reference.py`` and driven as ``train.py`` does (``np.random.seed(seed)``, one ``default_rng(seed)``,
train examples).
B1: ``hf_ext.mad`` ``mode="madlab"`` on the same settings and seed, **checked byte-identical** to A.
B2: ``mode="fast"`` (counter-based seeds, vectorised; different bytes, same distribution).

The target of issue 5: fuzzy recall at vocab 128 in ``madlab`` mode >= 100x faster than the reference with identical
bytes. The reference takes about 1.8 s per fuzzy-recall example at vocab 128 (idle machine), so the full run draws
only a few reference examples there. Rows: examples/s per arm and the ratios; figure ``benchmarks/figures/
mad_generation.png``.

    python benchmarks/mad_generation.py            # full (about 1-2 minutes on an idle CPU)
    python benchmarks/mad_generation.py --quick    # smoke test, < 10 s
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
from _timing import append_json_row, machine_info

NAME = "mad_generation"

# ------------------------------------------------------------------------------------------------------------------
# The reference generators: the faithful transcription the tests use (tests/mad/madlab_reference.py, mad-lab, MIT,
# see NOTICE), loaded by path so that this script and the tests time and check against the same code.
# ------------------------------------------------------------------------------------------------------------------
def _load_reference():
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "tests" / "mad" / "madlab_reference.py"
    spec = importlib.util.spec_from_file_location("madlab_reference", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_ref = _load_reference()
generate_kv_map = _ref.generate_kv_map
generate_in_context_recall_instance = _ref.generate_in_context_recall_instance
generate_fuzzy_in_context_recall_instance = _ref.generate_fuzzy_in_context_recall_instance
generate_memorization_instance = _ref.generate_memorization_instance
generate_compression_instance = _ref.generate_compression_instance
generate_selective_copying_instance = _ref.generate_selective_copying_instance

REF_FNS = {
    "in-context-recall": generate_in_context_recall_instance,
    "noisy-in-context-recall": generate_in_context_recall_instance,
    "fuzzy-in-context-recall": generate_fuzzy_in_context_recall_instance,
    "memorization": generate_memorization_instance,
    "compression": generate_compression_instance,
    "selective-copying": generate_selective_copying_instance,
}


def reference_train_split(cfg, n):
    """mad-lab's data path for ``n`` train examples of ``cfg`` -> (inputs, targets) int64."""
    np.random.seed(cfg.seed)
    kv_map = generate_kv_map(cfg.vocab_size - 1, seed=cfg.seed) if cfg.task == "memorization" else None
    kwargs = dict(vocab_size=cfg.vocab_size, seq_len=cfg.seq_len, k_motif_size=cfg.k_motif_size,
                  v_motif_size=cfg.v_motif_size, frac_noise=cfg.frac_noise, noise_vocab_size=cfg.noise_vocab_size,
                  num_tokens_to_copy=cfg.num_tokens_to_copy, rng=np.random.default_rng(cfg.seed),
                  multi_query=cfg.multi_query, kv_map=kv_map)
    fn = REF_FNS[cfg.task]
    inst = [fn(is_training=True, **kwargs) for _ in range(n)]
    return np.stack([i[0] for i in inst]).astype(np.int64), np.stack([i[1] for i in inst]).astype(np.int64)


# ------------------------------------------------------------------------------------------------------------------


def _rate(fn, n, repeats):
    """(examples/s median over repeats, last result)."""
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return n / float(np.median(times)), out


def cases(quick):
    from hf_ext.mad import baseline

    if quick:
        return [(baseline(t, vocab_size=v) if v else baseline(t), n_ref, n_ours, n_fast)
                for t, v, n_ref, n_ours, n_fast in [
                    ("in-context-recall", None, 8, 8, 256), ("fuzzy-in-context-recall", 32, 2, 2, 16),
                    ("selective-copying", None, 8, 8, 256), ("compression", None, 8, 8, 256),
                    ("memorization", None, 8, 8, 256), ("noisy-in-context-recall", None, 8, 8, 256)]]
    return [(baseline(t, vocab_size=v) if v else baseline(t), n_ref, n_ours, n_fast)
            for t, v, n_ref, n_ours, n_fast in [
                ("fuzzy-in-context-recall", 128, 3, 3, 256),
                ("fuzzy-in-context-recall", None, 100, 100, 2000),
                ("in-context-recall", None, 400, 400, 12800),
                ("noisy-in-context-recall", None, 400, 400, 12800),
                ("selective-copying", None, 400, 400, 12800),
                ("compression", None, 1000, 1000, 12800),
                ("memorization", None, 256, 256, 12800)]]


def main(argv=None) -> int:
    from _timing import common_argparser

    parser = common_argparser(__doc__.splitlines()[0])
    args = parser.parse_args(argv)
    from hf_ext.mad import generate

    repeats = args.repeats or (1 if args.quick else 3)
    results = {}
    for cfg, n_ref, n_ours, n_fast in cases(args.quick):
        c = cfg.replace(num_train_examples=max(n_ref, n_ours))
        generate(c, "train", 0, 1)  # warm caches (fuzzy recall's permutation tables) outside the timing
        r_ref, ref = _rate(lambda c=c, n=n_ref: reference_train_split(c, n), n_ref, 1 if n_ref <= 3 else repeats)
        r_ml, ours = _rate(lambda c=c, n=n_ours: generate(c, "train", 0, n), n_ours, repeats)
        identical = bool(np.array_equal(ref[0], ours[0][:n_ref]) and np.array_equal(ref[1], ours[1][:n_ref]))
        cf = c.replace(mode="fast", num_train_examples=n_fast)
        generate(cf, "train", 0, min(4, n_fast))
        r_fast, _ = _rate(lambda cf=cf: generate(cf, "train"), n_fast, repeats)
        case = f"{cfg.shorthand} V={cfg.vocab_size} L={cfg.seq_len}"
        results[case] = (r_ref, r_ml, r_fast)
        row = {"benchmark": NAME, "case": case, "task": cfg.task, "vocab_size": cfg.vocab_size, "seq_len": cfg.seq_len,
               "quick": args.quick, "reference_examples_per_s": r_ref, "madlab_examples_per_s": r_ml,
               "fast_examples_per_s": r_fast, "madlab_speedup": r_ml / r_ref, "fast_speedup": r_fast / r_ref,
               "identical_bytes": identical, "n_reference": n_ref, "n_madlab": n_ours, "n_fast": n_fast,
               "numpy": np.__version__}
        append_json_row(NAME, row, out=args.out)
        print(f"{case:<22} reference {r_ref:10.1f} ex/s | madlab {r_ml:10.1f} ex/s ({r_ml / r_ref:7.1f}x, identical="
              f"{identical}) | fast {r_fast:11.1f} ex/s ({r_fast / r_ref:8.1f}x)")
        if not identical:
            print(f"ERROR: madlab mode differs from the reference on {case}", file=sys.stderr)
            return 1
    if not args.quick:
        _plot(results, Path(__file__).resolve().parent / "figures" / f"{NAME}.png")
    return 0


def _plot(results, path):
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return None
    fig = Figure(figsize=(8, 3.6))
    ax = fig.subplots()
    names = list(results)
    x = np.arange(len(names))
    for i, (label, color) in enumerate((("mad-lab reference", "#999999"), ("hf_ext madlab (same bytes)", "#1f77b4"),
                                        ("hf_ext fast", "#ff7f0e"))):
        ax.bar(x + (i - 1) * 0.27, [results[n][i] for n in names], width=0.27, label=label, color=color)
    ax.set_yscale("log")
    ax.set_xticks(x, names, rotation=20, fontsize=7)
    ax.set_ylabel("examples / s (log)")
    ax.set_title(f"MAD generation, train split ({machine_info().get('cpu', 'CPU')})", fontsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


if __name__ == "__main__":
    sys.exit(main())
