"""Tour step ``core``: the shared core on a causal LM — anatomy, resuming from a layer, attention controls,
teacher-forced scoring of the model's own greedy continuation.

The headline artifact is a bar chart of how much removing each prompt token from attention (log-additive
weight 0, all layers) changes the next-token distribution (KL divergence), i.e. an AtMan-style influence map
computed with :func:`hf_ext.core.attention.attention_controls`. With ``--model`` it runs on that checkpoint.
"""

from __future__ import annotations

from hf_ext.tour import StepResult, TourContext, tour_step

_PROMPT = "the cat sat on the mat and the dog"


def _load(ctx: TourContext):
    from hf_ext.tiny import tiny_causal_lm, tiny_tokenizer

    if ctx.model:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tok = AutoTokenizer.from_pretrained(ctx.model)
        model = AutoModelForCausalLM.from_pretrained(ctx.model, attn_implementation="sdpa").to(ctx.device).eval()
        return model, tok, ctx.model
    return tiny_causal_lm("llama", seed=ctx.seed).to(ctx.device), tiny_tokenizer(), "tiny llama (random weights)"


@tour_step("core", component="core",
           description="anatomy, run_layers, attention controls (token influence map) and teacher-forced scoring")
def core_step(ctx: TourContext) -> StepResult:
    """Anatomy, run_layers, attention controls and teacher-forced scoring on one causal LM."""
    import torch

    from hf_ext.core.anatomy import get_anatomy
    from hf_ext.core.attention import attention_controls, key_weights
    from hf_ext.core.layers import forward_with_layer_inputs, run_layers
    from hf_ext.core.scoring import greedy_reference, teacher_forced_logprobs

    model, tok, label = _load(ctx)
    anatomy = get_anatomy(model)
    enc = tok(_PROMPT, return_tensors="pt").to(ctx.device)
    ids = enc.input_ids
    length = ids.shape[1]
    with torch.inference_mode():
        full, layer_inputs = forward_with_layer_inputs(model, input_ids=ids)
        mid = anatomy.num_layers // 2
        resumed = run_layers(model, layer_inputs[mid], mid, return_logits=True,
                             context=getattr(layer_inputs, "context", None))
        resume_err = (resumed - full.logits).abs().max().item()
        with attention_controls(model, torch.ones(1, length)):
            ones_err = (model(ids).logits - full.logits).abs().max().item()
        base = torch.log_softmax(full.logits[0, -1].float(), -1)
        influence = []
        for k in range(length):
            with attention_controls(model, key_weights(1, length, [[k]], 0.0)):
                logp = torch.log_softmax(model(ids).logits[0, -1].float(), -1)
            influence.append(torch.sum(base.exp() * (base - logp)).item())

    ref = greedy_reference(model, [ids[0].tolist()], max_new_tokens=8 if not ctx.full else 32, eos_token_id=[],
                           progress=False)
    scores = teacher_forced_logprobs(model, ref["prompt_ids"], ref["continuation_ids"])
    agree = float((scores.predicted_ids == scores.token_ids)[scores.mask].float().mean())

    tokens = tok.convert_ids_to_tokens(ids[0].tolist())
    top = max(range(1, length), key=lambda k: influence[k]) if length > 1 else 0
    artifacts = []
    try:
        from hf_ext.utils.imports import require

        require("matplotlib")
        from matplotlib.figure import Figure

        fig = Figure(figsize=(max(5, 0.35 * length), 3), dpi=100, layout="tight")
        ax = fig.add_subplot()
        ax.bar(range(length), influence, color="tab:red")
        ax.set_xticks(range(length), [t.replace("Ġ", "·") if t.strip() else "␣" for t in tokens], fontsize=8)
        ax.set_ylabel("KL(next token) when removed")
        ax.set_title(f"token influence on the next token — {label}", fontsize=9)
        path = ctx.artifact("token_influence.png")
        fig.savefig(path)
        artifacts.append(path)
    except ImportError as err:
        note = f" (no plot: {err})"
    else:
        note = ""
    return StepResult(
        metrics={
            "layers": anatomy.num_layers,
            "run_layers_max_err": resume_err,
            "weights1_max_err": ones_err,
            "most_influential_token": tokens[top],
            "greedy_self_agreement": agree,
            "family": anatomy.family,
        },
        summary=(
            f"{label}: {anatomy.family} with {anatomy.num_layers} layers at `{anatomy.layers_path}`. Resuming from layer "
            f"{mid} reproduces the logits (max |Δ| {resume_err:.1e}); weights of 1 change nothing (max |Δ| {ones_err:.1e}). "
            f"Removing one prompt token at a time from attention shows {tokens[top]!r} matters most for the next token; "
            f"teacher-forcing the model's own greedy continuation agrees with it on {agree:.0%} of tokens{note}."
        ),
        artifacts=artifacts,
    )
