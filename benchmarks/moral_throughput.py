"""MoralDirection scoring throughput: ``MoralDirection.score(texts, use_templates=False)`` vs raw ``SentenceTransformer.encode``.

Both arms embed the same texts with the same SentenceTransformer (default: the bundled all-MiniLM-L6-v2) at the
same batch size, alternating runs in one process; the project arm adds the projection on the moral direction
(one (n, d) @ (d,) product). Target: throughput(score) / throughput(encode) ≥ 0.95.
Full size: 512 texts (questions over the 274-phrase collection, MFQ statements); --quick: 8 texts, one run per arm (smoke test).
"""

from __future__ import annotations

import time
from pathlib import Path

from _timing import append_json_row, common_argparser, format_ab, plot_ab, sync, time_ab

NAME = "moral_throughput"
SIZES = {
    "quick": dict(n_texts=8, batch_size=8, repeats=1, warmup=0),
    "full": dict(n_texts=512, batch_size=64, repeats=7, warmup=1),
}


def make_texts(n: int) -> list[str]:
    """``n`` realistic inputs: the MFQ statements, then template questions over the 274-phrase collection."""
    from hf_ext.moral import mfq, resources

    texts = [r["statement_en"] for r in mfq.load_items()]
    for t in resources.templates():
        texts += [t.format(p) for p in resources.verb_phrase_collection()]
    return texts[:n]


def main(argv=None) -> int:
    parser = common_argparser(__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="sentence-transformers path or Hub id (default: bundled MiniLM; "
                                                      "its shipped direction is used, otherwise a direction is fitted)")
    args = parser.parse_args(argv)
    import torch

    from hf_ext.moral import MoralDirection, cached_direction

    started = time.perf_counter()
    size_name = "quick" if args.quick else "full"
    size = SIZES[size_name]
    md = (cached_direction(args.model, device=args.device, progress=False) if args.model
          else MoralDirection.bundled(device=args.device))
    st = md.encoder.model
    texts = make_texts(size["n_texts"])
    bs = size["batch_size"]
    print(f"{NAME}: {md.encoder_name}, {len(texts)} texts, batch {bs}, {args.device}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")

    def encode():
        st.encode(texts, batch_size=bs, convert_to_numpy=True, show_progress_bar=False)
        sync(args.device)

    def score():
        md.score(texts, use_templates=False, batch_size=bs)
        sync(args.device)

    res = time_ab(encode, score, repeats=args.repeats or size["repeats"], warmup=size["warmup"],
                  label_a="st_encode", label_b="md_score")
    ratio = res["median_a_s"] / res["median_b_s"]  # throughput(score) / throughput(encode)
    row = {"benchmark": NAME, "case": f"n={len(texts)}", "quick": args.quick, "device": args.device,
           "model": md.encoder_name, "n_texts": len(texts), "batch_size": bs,
           "baseline": "SentenceTransformer.encode (same texts, batch size)",
           "project": "MoralDirection.score(use_templates=False)",
           "texts_per_s_encode": len(texts) / res["median_a_s"], "texts_per_s_score": len(texts) / res["median_b_s"],
           "throughput_ratio": ratio, "target": 0.95, "meets_target": ratio >= 0.95,
           **{k: v for k, v in res.items() if not k.startswith("times_")}}
    print(format_ab(res, case=f"n={len(texts)}"))
    print(f"throughput: encode {row['texts_per_s_encode']:.1f} texts/s, score {row['texts_per_s_score']:.1f} texts/s, "
          f"score/encode = {ratio:.3f} (target ≥ 0.95: {'met' if ratio >= 0.95 else 'NOT met'})")
    path = append_json_row(NAME, row, out=args.out, device=args.device)
    fig = plot_ab(Path(args.out) / f"{NAME}.png",
                  {f"n={len(texts)}": res}, title=f"MoralDirection.score vs SentenceTransformer.encode, {md.encoder_name} "
                                                  f"({args.device}); throughput ratio {ratio:.3f}", unit="s")
    print(f"row appended to {path}" + (f"; figure {fig}" if fig else "") + f" ({time.perf_counter() - started:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
