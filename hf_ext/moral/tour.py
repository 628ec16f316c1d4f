"""Tour step ``moral``: MoralDirection of the bundled all-MiniLM-L6-v2 — user-study r, MFQ foundations, plots.

Uses the direction that ships with hf_ext (fitted on the bundled encoder, so nothing is downloaded or fitted);
``--full`` refits it from the encoder first and adds the regional study; ``--model`` fits (and caches) the
direction of that sentence-transformers model instead.
"""

from __future__ import annotations

from hf_ext.tour import StepResult, TourContext, tour_step


@tour_step("moral", component="moral",
           description="MoralDirection on all-MiniLM-L6-v2: user-study Pearson r, MFQ foundations, PC1 scatter")
def moral_step(ctx: TourContext) -> StepResult:
    """Score the user-study actions and the MFQ with the shipped (or ``--model``) direction and plot them."""
    from hf_ext.moral import MoralDirection, cached_direction, evaluation, mfq

    if ctx.model:
        md = cached_direction(ctx.model, "en", device=ctx.device, progress=ctx.progress)
    elif ctx.full:
        bundled = MoralDirection.bundled(device=ctx.device)
        md = MoralDirection.fit(bundled.encoder, "en", progress=ctx.progress)
    else:
        md = MoralDirection.bundled(device=ctx.device)
    us = evaluation.user_study_correlation(md, "globalAMT", batch_size=128, progress=ctx.progress)
    res = mfq.score_mfq(md, batch_size=64)
    artifacts = [
        evaluation.plot_user_study(us, ctx.artifact("moral_user_study.png")),
        evaluation.plot_pc1(md, ctx.artifact("moral_pc1_actions.png"), us["actions"], embeddings=us["embeddings"],
                            title=f"user-study actions on the moral direction of {md.encoder_name}"),
        evaluation.plot_mfq(res["foundations"], ctx.artifact("moral_mfq.png"), human="us"),
    ]
    metrics = {"pearson_r_globalAMT": round(us["r"], 4), "p_value": float(f"{us['p']:.3g}"), "n_actions": us["n"],
               "r_dos": round(us["r_dos"], 4), "r_donts": round(us["r_donts"], 4)}
    if ctx.full:
        reg = evaluation.user_study_correlation(md, "regional", batch_size=128, progress=ctx.progress)
        metrics["pearson_r_regional"] = round(reg["r"], 4)
    metrics.update({f"mfq_{k}": round(v, 4) for k, v in res["foundations"].items()})
    by_action = dict(zip(us["actions"], us["model"]))
    return StepResult(
        metrics=metrics,
        summary=(f"{md.encoder_name}: the moral direction's scores of the {us['n']} user-study actions correlate with "
                 f"the human judgements at Pearson r = {us['r']:.3f} (p = {us['p']:.1e}; the paper's "
                 f"bert-large-nli-mean-tokens scores give 0.835). 'kill people' {by_action['kill people']:+.2f}, "
                 f"'smile at my friend' {by_action['smile at my friend']:+.2f}. MFQ foundations: "
                 + ", ".join(f"{k} {v:+.2f}" for k, v in res["foundations"].items()) + "."),
        artifacts=artifacts,
    )
