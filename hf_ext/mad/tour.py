"""Tour step ``mad``: the six MAD tasks (parity hash vs mad-lab), a ``--lite`` benchmark run of a tiny striped model
and its report (per-task bar chart PNG + markdown)."""

from __future__ import annotations

from hf_ext.tour import StepResult, TourContext, tour_step

#: sha256 of mad-lab's in-context-recall baseline at ntr=64, nte=16, seed 12345 (numpy 2.4.6), see specs/mad.md §9.
_CR_GOLDEN = "a0442f227f9102e3d25bc3a8f5f1581ffbc3197b1799dbe901001367f38521e5"


@tour_step("mad", component="mad",
           description="MAD synthetic tasks: mad-lab parity hash, a --lite benchmark run of a tiny striped model, report")
def mad_step(ctx: TourContext) -> StepResult:
    """Generate the six tasks, check the parity hash, run ``--lite`` on a tiny model and render the report."""
    import time

    import numpy as np

    from hf_ext.mad import arrays_sha256, baseline, generate_splits, run_benchmark
    from hf_ext.mad.report import mad_report

    t0 = time.perf_counter()
    s = generate_splits(baseline("in-context-recall", num_train_examples=64, num_test_examples=16))
    digest = arrays_sha256(*s["train"], *s["test"])
    parity = digest == _CR_GOLDEN if np.__version__ == "2.4.6" else f"unchecked (numpy {np.__version__})"
    t_gen = time.perf_counter() - t0
    arch = "mH Sg mA Sg" if ctx.full else "H Sg mA Sg"  # striped hybrid: Hyena + attention, SwiGLU mixers
    sizes = {"num_train_examples": 1024 if ctx.full else 32, "num_test_examples": 128 if ctx.full else 16}
    out = ctx.artifact("results")
    epochs = 20 if ctx.full else 1
    run_benchmark(arch, protocol="madlab", preset="lite", out_dir=out, epochs=epochs,
                  hidden_size=64 if ctx.full else 32, num_heads=4 if ctx.full else 2, batch_size=32, overrides=sizes,
                  seed=ctx.seed,
                  progress=ctx.progress, resume=False)
    paths = mad_report(out, ctx.out_dir, title=f"MAD --lite: {arch}", knob_plots=ctx.full)
    row = paths["table"].iloc[0]
    scores = {k: round(float(v), 3) for k, v in row.items()}
    note = " (--model is not used: MAD trains models from scratch)" if ctx.model else ""
    return StepResult(
        metrics={"mad_score": scores["MAD"], "parity_cr": parity, "tasks": len(scores) - 1, **scores},
        summary=(f"Generated the six MAD tasks (mad-lab parity hash of in-context recall: {parity}, {t_gen:.1f} s) and "
                 f"ran the `--lite` benchmark (6 baselines, {sizes['num_train_examples']} train examples, "
                 f"{epochs} epoch(s)) of the striped hybrid `{arch}`: MAD score {scores['MAD']:.3f} "
                 f"(a toy budget; the paper trains 200 epochs on 12,800 examples){note}."),
        artifacts=[paths["bars"], paths["markdown"], *paths["knobs"]],
    )
