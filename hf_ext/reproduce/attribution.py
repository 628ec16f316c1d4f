"""Attribution methods compared with AtMan on the same prompts, targets and units (the peers' methods).

Each method scores the *sentences* of a passage for a target continuation (higher = more important):

* AtMan (:class:`~hf_ext.atman.AtManExplainer`) at token, word or sentence granularity; token and word scores are
  summed over each sentence's tokens/words. Importance = rise of the target's cross-entropy when the unit is
  suppressed.
* Gradient × input and integrated gradients: **Captum** ``LayerGradientXActivation`` / ``LayerIntegratedGradients``
  on the model's input-embedding layer, over :class:`TargetLogProb` (hf_ext's teacher-forced log-probability of the
  target: logits at the target positions only, so memory does not grow with the vocabulary times the prompt).
  Captum's ``LLMGradientAttribution`` would compute the full ``[L, V]`` logits of every interpolation step (1.7 GB
  per 20 steps of 80 tokens on a 262k vocabulary) and one backward per target token, hence this forward. Token
  scores are the sum over the embedding dimension (as Captum's LLM API does); IG's baseline replaces the passage's
  tokens by token id 0 (Captum's default baseline) and keeps the template, question and target fixed.
* Feature ablation: **Captum's LLM attribution API** (``LLMAttribution(FeatureAblation)`` over a
  ``TextTemplateInput`` whose values are the sentences, baseline ``""``: a sentence is *removed* from the text).
* Last-layer attention: the attention that the target-predicting positions pay to each prompt token in the last
  decoder layer, averaged over heads and target positions (eager attention for that one forward).
* Random: seeded uniform scores.

Example:
    >>> from hf_ext.testing import tiny_causal_lm
    >>> model = tiny_causal_lm("llama")
    >>> f = TargetLogProb(model, torch.tensor([1, 5, 6, 7]), torch.tensor([8, 9]))
    >>> f(torch.tensor([[1, 5, 6, 7, 8]])).shape
    torch.Size([1])
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from contextlib import contextmanager

import torch
from torch import nn

from hf_ext.core.inputs import model_device, position_ids_from_mask


def _require_captum():
    try:
        import captum.attr as captum_attr
    except ImportError as err:
        raise ImportError("the attribution baselines need Captum: pip install 'hf-ext[attribution]'") from err
    return captum_attr


class TargetLogProb(nn.Module):
    """``log p(target | prompt)`` summed over the target's tokens, for Captum: input ids ``[B, P + T - 1]`` → ``[B]``.

    The input is the prompt followed by all target tokens but the last (teacher forcing, the same layout as
    :func:`hf_ext.core.scoring.teacher_forced_logprobs`); only the ``T`` logits that predict the target are computed
    (``logits_to_keep``), so memory stays ``B × T × V``.

    Args:
        model: a transformers causal LM.
        prompt_ids: ``[P]`` prompt ids (to check the layout).
        target_ids: ``[T]`` target ids.
    """

    def __init__(self, model: nn.Module, prompt_ids: torch.Tensor, target_ids: torch.Tensor):
        super().__init__()
        self.model = model
        self.target_ids = torch.as_tensor(target_ids, dtype=torch.long).flatten()
        self.length = int(torch.as_tensor(prompt_ids).numel()) + self.target_ids.numel() - 1
        if self.target_ids.numel() == 0:
            raise ValueError("target_ids is empty: give at least one target token")

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        if input_ids.dim() != 2 or input_ids.shape[1] != self.length:
            raise ValueError(f"input_ids must be [B, {self.length}] (prompt ⊕ target[:-1]), got {tuple(input_ids.shape)}")
        T = self.target_ids.numel()
        mask = torch.ones_like(input_ids)
        out = self.model(input_ids=input_ids, attention_mask=mask, position_ids=position_ids_from_mask(mask),
                         use_cache=False, logits_to_keep=T)
        logp = out.logits[:, -T:].float().log_softmax(-1)
        tgt = self.target_ids.to(logp.device).expand(input_ids.shape[0], -1)
        return logp.gather(-1, tgt.unsqueeze(-1)).squeeze(-1).sum(-1)


def _full_ids(prompt_ids: Sequence[int], target_ids: Sequence[int], device) -> torch.Tensor:
    return torch.tensor([list(prompt_ids) + list(target_ids)[:-1]], device=device)


def gradient_x_input(model: nn.Module, prompt_ids: Sequence[int], target_ids: Sequence[int]) -> torch.Tensor:
    """``[P]`` gradient × input-embedding scores of the prompt tokens (Captum ``LayerGradientXActivation``)."""
    ca = _require_captum()
    device = model_device(model)
    f = TargetLogProb(model, torch.tensor(prompt_ids), torch.tensor(target_ids))
    layer = ca.LayerGradientXActivation(f, model.get_input_embeddings())
    attr = layer.attribute(_full_ids(prompt_ids, target_ids, device))
    return attr[0, : len(prompt_ids)].sum(-1).detach().float().cpu()


def integrated_gradients(model: nn.Module, prompt_ids: Sequence[int], target_ids: Sequence[int],
                         baseline_positions: Sequence[int], *, n_steps: int = 16, internal_batch_size: int = 8,
                         baseline_id: int = 0) -> tuple[torch.Tensor, float]:
    """``[P]`` integrated-gradients scores (Captum ``LayerIntegratedGradients`` on the input embeddings) and the
    convergence delta (|Σ attributions − (f(x) − f(baseline))|).

    Args:
        baseline_positions: prompt positions replaced by ``baseline_id`` in the baseline (the others, and the
            target, are the same in input and baseline, so they get no attribution).
        n_steps: integration steps (Gauss–Legendre, Captum's default method).
        internal_batch_size: rows per forward/backward (bounds memory).
    """
    ca = _require_captum()
    device = model_device(model)
    f = TargetLogProb(model, torch.tensor(prompt_ids), torch.tensor(target_ids))
    ids = _full_ids(prompt_ids, target_ids, device)
    base = ids.clone()
    base[0, torch.as_tensor(list(baseline_positions), dtype=torch.long)] = baseline_id
    lig = ca.LayerIntegratedGradients(f, model.get_input_embeddings())
    attr, delta = lig.attribute(ids, baselines=base, n_steps=n_steps, internal_batch_size=internal_batch_size,
                                return_convergence_delta=True)
    return attr[0, : len(prompt_ids)].sum(-1).detach().float().cpu(), float(delta.abs().max())


def feature_ablation(model: nn.Module, tokenizer, template: str, sentences: Sequence[str],
                     target_ids: Sequence[int]) -> torch.Tensor:
    """``[S]`` Captum ``LLMAttribution(FeatureAblation)`` scores: log p(target) with all sentences minus with
    sentence ``s`` removed from the text (``template`` has one ``{}`` per sentence, other braces doubled)."""
    ca = _require_captum()
    from captum.attr import TextTemplateInput

    llm = ca.LLMAttribution(ca.FeatureAblation(model), tokenizer)
    inp = TextTemplateInput(template, values=list(sentences), baselines=[""] * len(sentences))
    res = llm.attribute(inp, target=torch.tensor(list(target_ids)), use_cached_outputs=False)
    return torch.as_tensor(res.seq_attr).detach().float().cpu()


@contextmanager
def _eager_attention(model: nn.Module):
    previous = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        yield
    finally:
        model.set_attn_implementation(previous)


@torch.no_grad()
def last_layer_attention(model: nn.Module, prompt_ids: Sequence[int], target_ids: Sequence[int]) -> torch.Tensor:
    """``[P]``: attention of the target-predicting positions to each prompt token in the last layer (mean over heads
    and target positions)."""
    device = model_device(model)
    ids = _full_ids(prompt_ids, target_ids, device)
    P, T = len(prompt_ids), len(target_ids)
    with _eager_attention(model):
        out = model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False, output_attentions=True,
                    logits_to_keep=1)
    att = out.attentions[-1][0]  # [H, L, L]
    return att[:, P - 1 : P - 1 + T, :P].float().mean((0, 1)).cpu()


def random_scores(n: int, seed: int) -> torch.Tensor:
    """``[n]`` seeded uniform scores (the random baseline)."""
    rng = random.Random(seed)
    return torch.tensor([rng.random() for _ in range(n)])


def to_sentences(token_scores: torch.Tensor, sentence_positions: Sequence[Sequence[int]]) -> torch.Tensor:
    """``[S]``: the sum of ``token_scores`` ``[P]`` over each sentence's token positions.

    Example:
        >>> to_sentences(torch.tensor([1.0, 2.0, 3.0, 4.0]), [[0, 1], [3]]).tolist()
        [3.0, 4.0]
    """
    return torch.stack([token_scores[list(pos)].sum() for pos in sentence_positions])


def unit_scores_to_sentences(unit_positions: Sequence[Sequence[int]], unit_scores: torch.Tensor,
                             sentence_positions: Sequence[Sequence[int]]) -> torch.Tensor:
    """``[S]``: the sum of the scores of the units lying inside each sentence (a unit belongs to the sentence that
    holds its first token)."""
    owner = {p: s for s, pos in enumerate(sentence_positions) for p in pos}
    out = torch.zeros(len(sentence_positions))
    for pos, score in zip(unit_positions, unit_scores.tolist()):
        s = owner.get(int(pos[0])) if len(pos) else None
        if s is not None:
            out[s] += score
    return out
