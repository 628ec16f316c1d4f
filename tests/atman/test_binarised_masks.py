"""AtMan at a fractional suppression factor on families whose masks cannot carry a bias (issue 17).

MPT binarises every mask (``.to(torch.bool)``, ``masked_fill``) and Doge marks every non-zero mask entry as masked
(``prepare_dynamic_mask``), so the conformance suite's 4D-mask reference cannot express ``log 0.3`` on a key there.
The references here put the bias where each model's own code adds one: MPT's ALiBi tensor (its attention uses the
tensor's last ``K`` columns) and Doge's dynamic mask. Both are the model's forward with one key's score lowered by
``log w``; hf_ext's controls (MPT: the bypass path at its softmax; Doge: the AttentionInterface path) must match.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from hf_ext.atman import AtManExplainer
from hf_ext.core.anatomy import get_anatomy
from tests.atman.test_non_causal import causal_or_refused
from tests.conformance.catalog import build, text_ids

FACTOR = 0.3


def _sequence():
    prompt, target = text_ids(1, 5, seed=6)[0], text_ids(1, 3, seed=7)[0, 1:]
    return prompt, target, torch.cat([prompt, target[:-1]])[None]


def _check(model, biased_forward):
    prompt, target, seq = _sequence()
    P = prompt.numel()

    def ce(j):
        with torch.no_grad():
            logits = biased_forward(seq, j).logits[0, P - 1:]
        return F.cross_entropy(logits, target, reduction="none")

    base = ce(None)
    naive = torch.stack([base - ce(j) for j in range(P)])
    exp = AtManExplainer(model, None, suppression_factor=FACTOR, max_batch_size=2, progress=False).explain_ids(prompt, target)
    torch.testing.assert_close(exp.delta, naive, atol=1e-5, rtol=1e-4)
    assert naive.abs().max() > 1e-3


def test_mpt_fractional_factor_equals_a_bias_on_its_alibi():
    model = build("mpt")
    decoder = model.transformer

    def forward(seq, j):
        original = decoder.build_mpt_alibi_tensor

        def biased(*args, **kwargs):
            alibi = original(*args, **kwargs).clone()  # [H, 1, S]
            if j is not None:
                alibi[..., alibi.shape[-1] - seq.shape[1] + j] += math.log(FACTOR)
            return alibi

        decoder.build_mpt_alibi_tensor = biased
        try:
            return model(input_ids=seq, use_cache=False)
        finally:
            del decoder.build_mpt_alibi_tensor

    _check(model, forward)


def test_doge_fractional_factor_equals_a_bias_on_its_dynamic_mask():
    model = build("doge")
    if not causal_or_refused(model):
        return
    attentions = get_anatomy(model).attentions

    def forward(seq, j):
        for attention in attentions:
            def biased(*args, _original=attention.prepare_dynamic_mask, **kwargs):
                mask = _original(*args, **kwargs)
                if j is None:
                    return mask
                shift = torch.zeros_like(mask)
                shift[..., j] = math.log(FACTOR)
                return torch.where(mask > torch.finfo(mask.dtype).min / 2, mask + shift, mask)

            attention.prepare_dynamic_mask = biased
        try:
            return model(input_ids=seq, use_cache=False)
        finally:
            for attention in attentions:
                del attention.prepare_dynamic_mask

    _check(model, forward)
