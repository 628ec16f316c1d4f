"""Tour step ``umup``: a small LR-transfer sweep (u-μP vs standard parametrisation) on the stdlib-source bytes.

Two widths, a short log2 LR grid per parametrisation, a few dozen steps: the plot shows u-μP's loss-vs-LR curves
for both widths with the optimum at an O(1) LR, next to SP's at O(1e-3). ``--full`` runs three widths, more LRs
and steps (minutes).
"""

from __future__ import annotations

from hf_ext.tour import StepResult, TourContext, tour_step


@tour_step("umup", component="umup",
           description="u-μP: unit-scaled Llama, per-tensor LRs, tiny LR-transfer sweep vs standard parametrisation")
def umup_step(ctx: TourContext) -> StepResult:
    """Tiny LR sweep of UMupLlamaForCausalLM vs LlamaForCausalLM across two widths."""
    import torch

    from hf_ext.umup.sweep import best_lrs, lr_sweep, mean_losses, plot_sweep, save_rows

    torch.manual_seed(ctx.seed)
    if ctx.full:
        widths, grids, steps, batch, seq = [64, 128, 256], {"umup": [-3, -2, -1, 0, 1], "sp": [-11, -10, -9, -8, -7]}, 150, 16, 64
    else:
        widths, grids, steps, batch, seq = [32, 64], {"umup": [-2, 0, 2], "sp": [-10, -8, -6]}, 30, 8, 32
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        rows = lr_sweep(widths=widths, log2_lrs=grids, steps=steps, seeds=[ctx.seed], batch_size=batch, seq_len=seq,
                        progress=ctx.progress)
    finally:
        torch.set_num_threads(threads)
    png = plot_sweep(rows, ctx.artifact("lr_sweep.png"), title=f"tour: {steps} steps, batch {batch}×{seq}")
    js = save_rows(rows, ctx.artifact("lr_sweep.json"))
    best, means = best_lrs(rows), mean_losses(rows)
    w_lo, w_hi = widths[0], widths[-1]
    return StepResult(
        metrics={"umup_best_log2_lr": f"{best['umup'][w_lo]:g}→{best['umup'][w_hi]:g}",
                 "sp_best_log2_lr": f"{best['sp'][w_lo]:g}→{best['sp'][w_hi]:g}",
                 "umup_best_loss": round(min(means["umup"][w_hi].values()), 3),
                 "sp_best_loss": round(min(means["sp"][w_hi].values()), 3)},
        summary=(f"Byte-level LMs on the standard-library source, widths {w_lo}→{w_hi}, {steps} steps. u-μP's best "
                 f"log2 LR: {best['umup'][w_lo]:g} → {best['umup'][w_hi]:g} (an O(1) LR with unit-initialised weights); "
                 f"standard parametrisation: {best['sp'][w_lo]:g} → {best['sp'][w_hi]:g}. A toy budget: run "
                 "`hf-ext umup sweep` or `--full` for the real transfer experiment."),
        artifacts=[png, js],
    )
