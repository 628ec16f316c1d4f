"""Tour step ``atman``: AtMan explanation heat-map (HTML + PNG), deletion AUC vs random order, and steering.

On tiny models it first trains (seeded, a few seconds) a 1-layer Llama to copy the prompt's 3rd letter, so the
explanation has a known right answer; with ``--model`` it explains that checkpoint instead.
"""

from __future__ import annotations

from hf_ext.tour import StepResult, TourContext, tour_step


def _copy_model(seed: int, steps: int):
    import string

    import torch

    from hf_ext.tiny import tiny_causal_lm, tiny_tokenizer

    tok = tiny_tokenizer()
    model = tiny_causal_lm("llama", seed=seed, hidden_size=32, num_layers=1).train()
    letters = torch.tensor(tok.convert_tokens_to_ids(list(string.ascii_lowercase)))
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):
        x = letters[torch.randint(0, 26, (64, 8), generator=gen)]
        logits = model(torch.cat([torch.ones(64, 1, dtype=torch.long), x], 1)).logits[:, -1]
        loss = torch.nn.functional.cross_entropy(logits, x[:, 2])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval(), tok


@tour_step("atman", component="atman",
           description="AtMan explanation heat-map, deletion AUC vs random, steering during generate()")
def atman_step(ctx: TourContext) -> StepResult:
    """Explain, score faithfulness and steer on a tiny trained copy model (or ``--model``)."""
    from hf_ext.atman import AtManControl, AtManExplainer, deletion_auc, generate_steered

    if ctx.model:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tok = AutoTokenizer.from_pretrained(ctx.model)
        model = AutoModelForCausalLM.from_pretrained(ctx.model, attn_implementation="sdpa").to(ctx.device).eval()
        prompt, target, label = "The capital of France is", " Paris", ctx.model
    else:
        model, tok = _copy_model(ctx.seed, 600 if ctx.full else 250)
        model = model.to(ctx.device)
        prompt, target, label = "qwertyui", "e", "tiny Llama trained to copy the 3rd letter"
    explainer = AtManExplainer(model, tok, suppression_factor=0.0, max_batch_size=16, progress=ctx.progress)
    exp = explainer.explain(prompt, target)
    html = ctx.artifact("atman_heatmap.html")
    html.write_text(exp.to_html(), encoding="utf-8")
    artifacts = [html]
    try:
        exp.plot(ctx.artifact("atman_relevance.png"))
        artifacts.append(ctx.artifact("atman_relevance.png"))
    except ImportError:
        pass
    res = deletion_auc(explainer, prompt, target, n_random=8, seed=ctx.seed, explanation=exp)
    top = exp.units[int(exp.importance().argmax())].label
    steered = generate_steered(model, tok, prompt, [AtManControl(2, 1, 0.0)], max_new_tokens=1, do_sample=False)
    plain = generate_steered(model, tok, prompt, [], max_new_tokens=1, do_sample=False)
    new_steered = tok.decode(steered[0, -1:])
    new_plain = tok.decode(plain[0, -1:])
    return StepResult(
        metrics={"most_relevant": top, "deletion_auc": res["atman_auc"], "random_auc": res["random_auc"],
                 "faithfulness": res["faithfulness"], "next_token_plain": new_plain, "next_token_steered": new_steered},
        summary=(f"{label}: explaining {target!r} after {prompt!r}, AtMan ranks {top!r} first. Deletion AUC "
                 f"{res['atman_auc']:.3f} vs {res['random_auc']:.3f} for random order (lower = more faithful). "
                 f"Suppressing the 3rd character during generate() changes the next token from {new_plain!r} to "
                 f"{new_steered!r}."),
        artifacts=artifacts,
    )
