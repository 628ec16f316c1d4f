"""Tour step ``scar``: the end-to-end toy SCAR experiment (detection AUROC, steering away/towards, FDT vs base).

A tiny Llama is trained (seconds) on a generated corpus where a concept is marked (sentences of concept words vs
neutral words), a SCAR adapter is trained on its residual stream with ``transformers.Trainer``, and the step reports
held-out detection AUROC, the concept-word rate of greedy continuations with the adapter off / steering away /
steering towards, and the first divergent token vs the base model at α = 1 and α near 1. Writes ``scar_toy.png``.
"""

from __future__ import annotations

from hf_ext.tour import StepResult, TourContext, tour_step


def _plot(res, path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 3), dpi=100, layout="tight")
    ax1, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    names = ["away (α=-20)", "off", "towards"]
    rates = [res["rate_away"], res["rate_base"], res["rate_towards"]]
    ax1.bar(names, rates, color=["tab:green", "tab:gray", "tab:red"])
    ax1.set_ylim(0, 1)
    ax1.set_ylabel("concept-word rate")
    ax1.set_title("greedy continuations", fontsize=9)
    det = res["detection"]
    for label, color in ((1, "tab:red"), (0, "tab:blue")):
        ax2.hist([p for p, y in zip(det["probs"], det["labels"]) if y == label], bins=20, range=(0, 1), alpha=0.6,
                 color=color, label="concept" if label else "neutral")
    ax2.set_xlabel("sequence p(concept) = mean σ(z_0)")
    ax2.set_title(f"held-out detection, AUROC {res['auroc']:.3f}", fontsize=9)
    ax2.legend(fontsize=8)
    fig.savefig(path)


@tour_step("scar", component="scar",
           description="SCAR toy: train LM + conditioned SAE, detection AUROC, steering away/towards, FDT vs base")
def scar_step(ctx: TourContext) -> StepResult:
    """Run :func:`hf_ext.scar.toy.run_toy_experiment` and plot the steering rates and the detector's scores."""
    from hf_ext.scar.toy import concept_corpus, run_toy_experiment

    res = run_toy_experiment(ctx.seed, progress=ctx.progress, lm_steps=300 if ctx.full else 120,
                             sae_epochs=20 if ctx.full else 8)
    texts, labels = concept_corpus(200, seed=ctx.seed + 3)
    det = res["adapter"].detect(texts, res["tokenizer"], batch_size=64)
    res["detection"] = {"probs": det.for_concept(0).tolist(), "labels": labels}
    artifacts = []
    try:
        _plot(res, ctx.artifact("scar_toy.png"))
        artifacts.append(ctx.artifact("scar_toy.png"))
    except ImportError:
        pass
    adapter_dir = ctx.artifact("adapter")
    res["adapter"].save_pretrained(adapter_dir, detection_auroc={"concept": res["auroc"]},
                                   fdt={"error-preserving α=1": res["fdt_alpha_1"],
                                        "error-preserving α=1.1": res["fdt_alpha_near_1"],
                                        "replace α=1 (reference)": res["fdt_replace_alpha_1"]})
    artifacts.append(adapter_dir / "README.md")
    n = res["max_new_tokens"]
    example = res["prompts"][0]
    note = "" if ctx.model is None else " (--model is ignored: the toy needs its own vocabulary)"
    return StepResult(
        metrics={"auroc": round(res["auroc"], 3), "rate_off": round(res["rate_base"], 3),
                 "rate_away": round(res["rate_away"], 3), "rate_towards": round(res["rate_towards"], 3),
                 "fdt_alpha_1": res["fdt_alpha_1"], "fdt_alpha_1.1": res["fdt_alpha_near_1"],
                 "fdt_replace_alpha_1": res["fdt_replace_alpha_1"], "N": n,
                 "train_tokens": res["num_activation_tokens"], "seconds": round(res["seconds_total"], 1)},
        summary=(f"Toy LM + SCAR (block output of the last layer){note}: held-out detection AUROC "
                 f"{res['auroc']:.3f}. Concept-word rate of greedy continuations: off {res['rate_base']:.2f}, steering "
                 f"away {res['rate_away']:.2f}, towards {res['rate_towards']:.2f} (e.g. {example!r} → off "
                 f"{res['generations']['base'][0]!r}, towards {res['generations']['towards'][0]!r}). Mean FDT vs base "
                 f"(N={n}): error-preserving α=1 {res['fdt_alpha_1']:.1f}, α=1.1 {res['fdt_alpha_near_1']:.1f}, "
                 f"reference replace α=1 {res['fdt_replace_alpha_1']:.1f}."),
        artifacts=artifacts,
    )
