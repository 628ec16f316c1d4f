"""The end-to-end toy SCAR experiment: a tiny LM trained on a generated corpus with a marked concept, SCAR trained on
it, concept detection on held-out sentences, steering away from / towards the concept, and FDT vs the base model.

The corpus (word-level, :mod:`hf_ext.scar.toy_data`): sentences ``"the W1 and the W2 and the W3 ."``
whose words come either all from :data:`CONCEPT_WORDS` (label 1, the "marked concept") or all from
:data:`NEUTRAL_WORDS` (label 0). A 2-layer Llama learns to stay on topic, so the topic must be represented in its
activations; SCAR conditions latent 0 on it. Steering is measured as the rate of concept words in greedy
continuations of ``"the W1 and the"`` prompts (half concept, half neutral).

Example:
    >>> res = run_toy_experiment(seed=0, progress=False)
    >>> res["auroc"] > 0.9, res["rate_away"] < res["rate_base"] < res["rate_towards"]
    (True, True)
"""

from __future__ import annotations

import random
import time
from typing import TYPE_CHECKING, Any

import torch

from .toy_data import CONCEPT_WORDS, NEUTRAL_WORDS, concept_corpus, concept_word_rate, toy_tokenizer

if TYPE_CHECKING:
    from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

__all__ = [
    "CONCEPT_WORDS", "NEUTRAL_WORDS", "concept_corpus", "concept_word_rate", "run_toy_experiment", "toy_tokenizer",
    "train_toy_lm",
]

def train_toy_lm(seed: int = 0, *, steps: int = 120, batch_size: int = 32, hidden_size: int = 32, num_layers: int = 2,
                 lr: float = 3e-3, progress: bool = True) -> tuple[LlamaForCausalLM, PreTrainedTokenizerFast]:
    """A tiny Llama trained on :func:`concept_corpus` (word tokens) with AdamW; returns ``(model, tokenizer)``."""
    from hf_ext.utils.progress import progress_bar

    from ..tiny import tiny_causal_lm

    tok = toy_tokenizer()
    model = tiny_causal_lm("llama", seed=seed, hidden_size=hidden_size, num_layers=num_layers).train()
    texts, _ = concept_corpus(steps * batch_size, seed=seed + 1)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for step in progress_bar(range(steps), desc="toy LM", enabled=progress):
            enc = tok(texts[step * batch_size:(step + 1) * batch_size], return_tensors="pt", padding=True)
            labels = enc.input_ids.masked_fill(enc.attention_mask == 0, -100)
            loss = model(**enc, labels=labels).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval(), tok


def run_toy_experiment(seed: int = 0, *, lm_steps: int = 120, sae_epochs: int = 8, num_train: int = 400,
                       num_test: int = 200, num_prompts: int = 24, max_new_tokens: int = 8, layer: int = -1,
                       site: str = "block", away: float = -20.0, towards: float = 40.0, progress: bool = True,
                       model_and_tokenizer: tuple | None = None, threads: int | None = 1) -> dict[str, Any]:
    """Train the toy LM and a SCAR adapter, then measure detection, steering and FDT.

    Args:
        seed: everything is seeded from it.
        lm_steps: toy LM training steps.
        sae_epochs: SAE epochs over the cached activations (Trainer, Adam lr 1e-3, batch 256 tokens).
        num_train, num_test: sentences for SAE training / held-out detection.
        num_prompts: steering prompts (half concept, half neutral).
        max_new_tokens: greedy tokens per prompt.
        layer, site: where SCAR hooks (default: the residual stream after the last layer).
        away: scale factor of latent 0 when steering away (``h_0 ← away · h_0``).
        towards: replacement value of latent 0 when steering towards, in units of the mean active ``h_0`` on concept
            tokens (``h_0 ← towards · mean h_0``).
        progress: tqdm bars.
        model_and_tokenizer: reuse an already trained ``(model, tokenizer)``.
        threads: torch intra-op threads during the experiment (1 is fastest for these tiny shapes, several times
            faster than 2 on a busy machine); restored afterwards. ``None`` keeps the current setting.

    Returns:
        dict with ``auroc`` (held-out per-sentence), ``rate_base``/``rate_away``/``rate_towards`` (concept-word rate
        of the greedy continuations), ``fdt_alpha_1`` / ``fdt_alpha_near_1`` / ``fdt_replace_alpha_1`` (mean FDT vs
        base, error-preserving α = 1, α = 1.1 and the reference's replace output at α = 1), ``max_new_tokens``, the
        trained ``model``, ``tokenizer``, ``adapter``, ``generations`` and timings.
    """
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _run_toy(seed, lm_steps=lm_steps, sae_epochs=sae_epochs, num_train=num_train, num_test=num_test,
                        num_prompts=num_prompts, max_new_tokens=max_new_tokens, layer=layer, site=site, away=away,
                        towards=towards, progress=progress, model_and_tokenizer=model_and_tokenizer)
    finally:
        torch.set_num_threads(previous)


def _run_toy(seed: int, *, lm_steps: int, sae_epochs: int, num_train: int, num_test: int, num_prompts: int,
             max_new_tokens: int, layer: int, site: str, away: float, towards: float, progress: bool,
             model_and_tokenizer: tuple | None) -> dict[str, Any]:
    from ..dtm.divergence import reference, score
    from .evaluation import auroc
    from .modeling_scar import ScarAdapter
    from .training import build_activation_dataset, train_scar

    t0 = time.perf_counter()
    if model_and_tokenizer is None:
        model, tok = train_toy_lm(seed, steps=lm_steps, progress=progress)
    else:
        model, tok = model_and_tokenizer
    t_lm = time.perf_counter() - t0
    train_texts, train_labels = concept_corpus(num_train, seed=seed + 2)
    test_texts, test_labels = concept_corpus(num_test, seed=seed + 3)
    adapter = ScarAdapter.for_model(model, layer=layer, site=site, concepts=["concept"], seed=seed).attach(model)
    ds = build_activation_dataset(model, tok, train_texts, train_labels, adapter=adapter, batch_size=64,
                                  progress=progress)
    train_scar(adapter, ds, epochs=sae_epochs, batch_size=128, lr=3e-3, seed=seed, progress=progress,
               logging_steps=10_000)
    t_sae = time.perf_counter() - t0 - t_lm

    det = adapter.detect(test_texts, tok, batch_size=64)
    score_auroc = auroc(det.for_concept(0), torch.tensor(test_labels))

    # steering: greedy continuations of "the W and the " prompts
    rng = random.Random(seed + 4)
    prompts = [f"the {rng.choice(CONCEPT_WORDS if i % 2 else NEUTRAL_WORDS)} and the" for i in range(num_prompts)]
    cached = ds[:]
    with torch.no_grad():
        h0 = adapter.encode(cached["activations"].float())[0][:, 0]
    lab = cached["labels"][:, 0] > 0
    h_scale = float(h0[lab & (h0 > 0)].mean()) if bool((lab & (h0 > 0)).any()) else 1.0
    enc = tok(prompts, return_tensors="pt", padding=True)
    gen_kwargs = dict(max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tok.pad_token_id)

    def generate() -> list[str]:
        with torch.no_grad():
            out = model.generate(**enc, **gen_kwargs)
        return tok.batch_decode(out[:, enc.input_ids.shape[1]:], skip_special_tokens=True)

    generations = {"base": generate()}
    with adapter.steer({0: away}, op="scale", output="error_preserving"):
        generations["away"] = generate()
    with adapter.steer({0: towards * h_scale}, op="replace", output="error_preserving"):
        generations["towards"] = generate()

    # FDT vs the base model's greedy continuations (teacher forced, hf_ext.dtm)
    prompt_ids = [tok(p).input_ids for p in prompts]
    ref = reference(model, prompt_ids, max_new_tokens=max_new_tokens, eos_token_id=[], progress=False)
    fdt = {}
    for name, strength, output in (("fdt_alpha_1", 1.0, "error_preserving"), ("fdt_alpha_near_1", 1.1, "error_preserving"),
                                   ("fdt_replace_alpha_1", 1.0, "replace")):
        with adapter.steer({0: strength}, output=output):
            fdt[name] = float(score(model, ref).fdt.float().mean())
    return {
        "auroc": score_auroc,
        "rate_base": concept_word_rate(generations["base"]),
        "rate_away": concept_word_rate(generations["away"]),
        "rate_towards": concept_word_rate(generations["towards"]),
        **fdt,
        "max_new_tokens": max_new_tokens,
        "h_scale": h_scale,
        "num_activation_tokens": len(ds),
        "seconds_lm": t_lm,
        "seconds_sae": t_sae,
        "seconds_total": time.perf_counter() - t0,
        "prompts": prompts,
        "generations": generations,
        "model": model,
        "tokenizer": tok,
        "adapter": adapter,
    }
