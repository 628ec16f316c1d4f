"""T-FREE tokenizer memory under a stream of new words: RSS growth stays within the pattern cache's bound.

A ``TFreeTokenizer`` (default ``max_cache_words``, m=10, v=8000) encodes ``--words`` distinct new words (default
1,000,000; letters only, so each is one word of the split) with ``encode_activations``, 100 texts of 100 words per
call. The resident set size is read after every call; the row reports the growth over the baseline (after a warm-up
call) at its peak, at the moment the cache first reaches its bound, and at the end, with the cache's size. Before the
bound (issue 19) the cache grew by ~73 MiB per 100k new words without limit. The claim, at the default bound (200,000
entries, m=10): the peak growth over 1M words stays within the stated cap of 150 MiB (a full cache plus the batch
that passes the bound plus allocator slack when a full cache is dropped and refilled). ``--max-cache-words 2000000``
shows the unbounded growth for comparison (no claim).

Single process, one arm (no baseline to alternate with: this is a bound, not a speed-up).
"""

from __future__ import annotations

import gc
import string
import sys
from pathlib import Path

from _timing import append_json_row, common_argparser

NAME = "tfree_cache_memory"
#: RSS growth the default bound is stated to stay within (MiB), see TFreeTokenizer's ``max_cache_words``.
STATED_CAP_MIB = 150
_LETTERS = string.ascii_lowercase


def word(i: int) -> str:
    """The i-th distinct all-letter word ("qa", "qb", …), so the split keeps it whole."""
    out = []
    while True:
        i, r = divmod(i, 26)
        out.append(_LETTERS[r])
        if i == 0:
            break
    return "q" + "".join(out)


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    import os

    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _plot(trace: list[tuple[int, float, int]], cap: int, path: Path) -> None:
    """RSS growth and cache entries against words streamed (needs matplotlib; skipped without it)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    words, growth, cache = zip(*trace)
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.plot(words, growth, label="RSS growth (MiB)")
    ax.set_xlabel("distinct new words encoded")
    ax.set_ylabel("MiB")
    ax2 = ax.twinx()
    ax2.plot(words, [c / 1000 for c in cache], color="tab:orange", alpha=0.6, label="cache entries (k)")
    ax2.set_ylabel("cache entries (thousands)")
    ax.set_title(f"T-FREE pattern cache, max_cache_words={cap:,}")
    fig.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    print(f"figure: {path}")


def main(argv=None) -> int:
    parser = common_argparser(__doc__.splitlines()[0])
    parser.add_argument("--words", type=int, default=None, help="distinct new words (default 1,000,000; --quick 30,000)")
    parser.add_argument("--max-cache-words", type=int, default=None, help="the tokenizer's bound (default: its default)")
    args = parser.parse_args(argv)
    from hf_ext.tfree import TFreeTokenizer
    from hf_ext.tfree.tokenization_tfree import DEFAULT_MAX_CACHE_WORDS

    n_words = args.words or (30_000 if args.quick else 1_000_000)
    cap = args.max_cache_words or (10_000 if args.quick else DEFAULT_MAX_CACHE_WORDS)
    tok = TFreeTokenizer(hash_vocab_size=8000, num_activations=10, max_cache_words=cap)
    per_text, per_call = 100, 100
    tok.encode_activations(["warm up the code paths of the tokenizer"] * 4)
    gc.collect()
    base = rss_mib()
    peak = at_full = 0.0
    max_cache = 0
    i = 0
    trace: list[tuple[int, float, int]] = []  # (words so far, RSS growth MiB, cache entries)
    while i < n_words:
        texts = []
        for _ in range(per_call):
            texts.append(" ".join(word(j) for j in range(i, min(i + per_text, n_words))))
            i = min(i + per_text, n_words)
            if i >= n_words:
                break
        tok.encode_activations(texts)
        growth = rss_mib() - base
        peak = max(peak, growth)
        max_cache = max(max_cache, tok.cache_size)
        trace.append((i, growth, tok.cache_size))
        if not at_full and tok.cache_size >= cap:
            at_full = growth
    end = rss_mib() - base
    claim = cap == DEFAULT_MAX_CACHE_WORDS and not args.quick
    ok = peak <= STATED_CAP_MIB if claim else None
    row = {"words": n_words, "max_cache_words": cap, "max_cache_size_seen": max_cache, "rss_growth_peak_mib": peak,
           "rss_growth_at_full_cache_mib": at_full, "rss_growth_end_mib": end,
           "mib_per_1k_cached_words": at_full / (cap / 1000) if at_full else None,
           "stated_cap_mib": STATED_CAP_MIB if claim else None, "within_cap": ok}
    print(f"{n_words:,} new words, cache bound {cap:,} words (largest seen {max_cache:,}): RSS +{peak:.0f} MiB at "
          f"peak, +{at_full:.0f} MiB when the cache first filled, +{end:.0f} MiB at the end"
          + (f" -> {'within' if ok else 'OVER'} the stated cap of {STATED_CAP_MIB} MiB" if claim else " (no claim)"))
    append_json_row(NAME, row, out=args.out, device="cpu")
    if not args.quick:
        _plot(trace, cap, Path(args.out) / f"{NAME}_cap{cap}.png")
    return 1 if ok is False else 0


if __name__ == "__main__":
    sys.exit(main())
