"""Tour step ``dtm``: divergent token metrics and an FDTM-ranked int8 coverage curve on a briefly trained tiny model.

Trains a tiny Llama on a seeded Markov corpus (seconds), scores identity (FDT = N), scans every decoder Linear at
4-bit absmax (a stress level: int8 barely moves tiny models), plots the coverage curve for FDTM vs random order and
builds an int8 plan. ``--full`` trains longer and uses more prompts.
"""

from __future__ import annotations

from hf_ext.tour import StepResult, TourContext, tour_step


@tour_step("dtm", component="dtm",
           description="FDT/SDT by teacher forcing, sensitivity scan, coverage curve (FDTM vs random order), int8 plan")
def dtm_step(ctx: TourContext) -> StepResult:
    """Divergent token metrics and DTM-guided compression on a tiny trained model."""
    import torch

    from hf_ext.dtm import build_plan, coverage_curve, curve_auc, reference, score, sensitivity_scan
    from hf_ext.dtm.compression import random_order
    from hf_ext.dtm.toy import train_toy_lm

    torch.manual_seed(ctx.seed)
    model, prompts = train_toy_lm(ctx.seed, steps=300 if ctx.full else 80, num_layers=2,
                                  num_prompts=32 if ctx.full else 12, progress=ctx.progress)
    ref = reference(model, prompts, max_new_tokens=64 if ctx.full else 32, eos_token_id=[], progress=False)
    identity = score(model, ref).aggregate()
    scan = sensitivity_scan(model, ref, methods={"int8": [4]}, progress=ctx.progress)
    order = scan.ranking("int8")
    curves = {"fdtm": coverage_curve(model, ref, order, bits=4),
              "random": coverage_curve(model, ref, random_order(order, ctx.seed), bits=4)}
    aucs = {k: curve_auc(v) for k, v in curves.items()}
    scan8 = sensitivity_scan(model, ref, methods={"int8": [8]}, progress=False)
    plan = build_plan(model, ref, scan8, min_fdt_ratio=0.95, progress=False)
    artifacts = []
    try:
        from matplotlib.figure import Figure

        fig = Figure(figsize=(5, 3.5), layout="tight")
        ax = fig.add_subplot()
        for name, curve in curves.items():
            ax.plot([p["param_share"] for p in curve], [p["fdt_ratio"] for p in curve], marker=".",
                    label=f"{name} order (AUC {aucs[name]:.3f})")
        ax.set_xlabel("share of decoder-Linear parameters quantized (4-bit absmax)")
        ax.set_ylabel("mean FDT / N")
        ax.legend()
        path = ctx.artifact("coverage_curve.png")
        fig.savefig(path, dpi=100)
        artifacts.append(path)
    except ImportError:
        pass
    (ctx.artifact("plan.json")).write_text(plan.to_json())
    artifacts.append(ctx.out_dir / "plan.json")
    return StepResult(
        metrics={"auc_fdtm_order": round(aucs["fdtm"], 4), "auc_random_order": round(aucs["random"], 4),
                 "int8_param_share": round(plan.metrics["int8_param_share"], 3), "identity_fdtm": identity["fdtm"],
                 "plan_fdt_ratio": round(plan.metrics["fdt_ratio"], 3)},
        summary=(f"Identity gives FDT = N = {identity['fdtm']:.0f}. Quantizing decoder Linears cumulatively in FDTM "
                 f"order keeps {'more' if aucs['fdtm'] > aucs['random'] else 'no more'} of the greedy path than a random "
                 f"order (AUC {aucs['fdtm']:.3f} vs "
                 f"{aucs['random']:.3f}, 4-bit stress level). The int8 plan converts "
                 f"{plan.metrics['int8_param_share']:.0%} of those parameters at mean FDT/N "
                 f"{plan.metrics['fdt_ratio']:.3f}."),
        artifacts=artifacts,
    )
