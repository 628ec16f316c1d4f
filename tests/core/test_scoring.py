"""Teacher-forced scoring and the greedy reference cache, against naive per-row loops on unpadded inputs."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from hf_ext.core.scoring import (
    IGNORE_INDEX,
    TeacherForcedScores,
    cross_entropy_per_token,
    greedy_reference,
    sequence_logprob,
    teacher_forced_logprobs,
    weights_fingerprint,
)
from hf_ext.testing import EOS_ID, TINY_VOCAB_SIZE

# Two prompts of different lengths (left-padded together) and continuations of different lengths (right-padded).
PROMPTS = [[1, 17, 42, 5], [1, 9, 33, 71, 12, 60, 8]]
CONTS = [[23, 54, 11, 90, 7], [66, 3]]


def _naive_scores(model, prompt, cont):
    """For each t: run the model on the UNPADDED ``prompt + cont[:t]`` alone (batch 1, no position_ids, no mask) and
    read the LAST logit: its log-softmax at ``cont[t]`` and its argmax."""
    logprobs, argmax = [], []
    with torch.no_grad():
        for t in range(len(cont)):
            last = model(input_ids=torch.tensor([prompt + cont[:t]])).logits[0, -1]
            logprobs.append(last.float().log_softmax(-1)[cont[t]].item())
            argmax.append(int(last.argmax()))
    return torch.tensor(logprobs), argmax


def _naive_greedy(model, prompt, max_new_tokens, eos=()):
    """Argmax loop with a full recompute each step (no cache, no padding, batch 1)."""
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(max_new_tokens):
            ids.append(int(model(input_ids=torch.tensor([ids])).logits[0, -1].argmax()))
            if ids[-1] in eos:
                break
    return ids[len(prompt):]


def _random_prompts(lengths, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [[1] + torch.randint(4, TINY_VOCAB_SIZE, (n - 1,), generator=gen).tolist() for n in lengths]


# --------------------------------------------------------------------------------------------------------------------
# Teacher forcing
# --------------------------------------------------------------------------------------------------------------------


def test_offset_matches_naive_loop(causal_lm):
    fingerprint = weights_fingerprint(causal_lm)
    scores = teacher_forced_logprobs(causal_lm, PROMPTS, CONTS, return_logits=True)
    assert isinstance(scores, TeacherForcedScores)
    assert scores.logprobs.shape == scores.mask.shape == scores.token_ids.shape == (2, 5)
    assert scores.logprobs.dtype == torch.float32 and scores.logits.shape == (2, 5, TINY_VOCAB_SIZE)
    assert scores.mask.tolist() == [[True] * 5, [True, True, False, False, False]]
    assert scores.token_ids.tolist() == [CONTS[0], CONTS[1] + [IGNORE_INDEX] * 3]
    for row, (prompt, cont) in enumerate(zip(PROMPTS, CONTS)):
        ref_lp, ref_argmax = _naive_scores(causal_lm, prompt, cont)
        n = len(cont)
        torch.testing.assert_close(scores.logprobs[row, :n], ref_lp, atol=1e-5, rtol=0)
        assert scores.predicted_ids[row, :n].tolist() == ref_argmax
        assert scores.logprobs[row, n:].isnan().all() and scores.logits[row, n:].isnan().all()
        assert (scores.predicted_ids[row, n:] == IGNORE_INDEX).all()
    # the full-vocab log-softmax agrees with the gathered log-probs
    gathered = scores.vocab_logprobs().gather(-1, scores.token_ids.clamp_min(0)[..., None])[..., 0]
    torch.testing.assert_close(gathered[scores.mask], scores.logprobs[scores.mask])
    assert weights_fingerprint(causal_lm) == fingerprint  # scoring leaves the shared model untouched


def test_tensor_inputs_with_masks_and_filler_ids(causal_lm):
    """Padded tensors with arbitrary filler under the masks (even ids outside the vocab) score like ragged lists."""
    prompt = torch.tensor([[999, 999, 999, *PROMPTS[0]], PROMPTS[1]])
    prompt_mask = torch.tensor([[0, 0, 0, 1, 1, 1, 1], [1] * 7])
    cont = torch.tensor([CONTS[0], CONTS[1] + [-100] * 3])
    cont_mask = torch.tensor([[1] * 5, [1, 1, 0, 0, 0]], dtype=torch.bool)
    from_tensors = teacher_forced_logprobs(causal_lm, prompt, cont, prompt_mask=prompt_mask, continuation_mask=cont_mask)
    from_lists = teacher_forced_logprobs(causal_lm, PROMPTS, CONTS)
    torch.testing.assert_close(from_tensors.logprobs, from_lists.logprobs, equal_nan=True, atol=1e-6, rtol=0)
    assert torch.equal(from_tensors.mask, from_lists.mask)
    # a 1-D tensor / flat list is a single row
    single = teacher_forced_logprobs(causal_lm, torch.tensor(PROMPTS[0]), CONTS[0])
    torch.testing.assert_close(single.logprobs[0], from_lists.logprobs[0], atol=1e-5, rtol=0)
    # numpy arrays: a padded 2-D array and ragged rows of numpy ints
    from_numpy = teacher_forced_logprobs(causal_lm, prompt.numpy(), [np.array(c) for c in CONTS],
                                         prompt_mask=prompt_mask)
    torch.testing.assert_close(from_numpy.logprobs, from_lists.logprobs, equal_nan=True, atol=1e-6, rtol=0)


def test_left_padding_row_equals_row_alone(causal_lm):
    prompts = _random_prompts([3, 9, 5], seed=1)
    conts = [p[1:5] for p in _random_prompts([6, 2, 4], seed=2)]
    batched = teacher_forced_logprobs(causal_lm, prompts, conts)
    for row, (prompt, cont) in enumerate(zip(prompts, conts)):
        alone = teacher_forced_logprobs(causal_lm, [prompt], [cont])  # batch 1, no padding at all
        n = len(cont)
        torch.testing.assert_close(batched.logprobs[row, :n], alone.logprobs[0, :n], atol=1e-5, rtol=0)
        assert batched.predicted_ids[row, :n].tolist() == alone.predicted_ids[0, :n].tolist()
    for batch_size in (1, 2):
        chunked = teacher_forced_logprobs(causal_lm, prompts, conts, batch_size=batch_size)
        torch.testing.assert_close(chunked.logprobs, batched.logprobs, equal_nan=True, atol=1e-5, rtol=0)


def test_position_ids_fix_left_padded_gpt2(causal_lms):
    """GPT-2 has absolute positions: without explicit position_ids a left-padded row is scored at shifted positions."""
    model = causal_lms["gpt2"]
    ref, _ = _naive_scores(model, PROMPTS[0], CONTS[0])  # row 0 is the left-padded one
    right = teacher_forced_logprobs(model, PROMPTS, CONTS).logprobs[0]
    wrong = teacher_forced_logprobs(model, PROMPTS, CONTS, use_position_ids=False).logprobs[0]
    torch.testing.assert_close(right, ref, atol=1e-5, rtol=0)
    assert (wrong - ref).abs().max() > 1e-3


def test_sequence_logprob_and_cross_entropy_match_hf_loss(causal_lm):
    """Independent reference: the model's own ``labels=`` loss (HF shifts labels internally) over the continuation."""
    ce = cross_entropy_per_token(causal_lm, PROMPTS, CONTS)
    total = sequence_logprob(causal_lm, PROMPTS, CONTS)
    for row, (prompt, cont) in enumerate(zip(PROMPTS, CONTS)):
        ids = torch.tensor([prompt + cont])
        labels = torch.tensor([[-100] * len(prompt) + cont])
        with torch.no_grad():
            loss = causal_lm(input_ids=ids, labels=labels).loss
        torch.testing.assert_close(ce[row, : len(cont)].mean(), loss, atol=1e-5, rtol=0)
        torch.testing.assert_close(total[row], -loss * len(cont), atol=1e-4, rtol=0)
    assert ce[1, 2:].isnan().all()


def test_empty_continuations_and_grad(causal_lms):
    model = causal_lms["llama"]
    scores = teacher_forced_logprobs(model, PROMPTS, [[5, 6], []])
    assert scores.mask.tolist() == [[True, True], [False, False]]
    assert scores.logprobs[1].isnan().all() and scores.sequence_logprob()[1] == 0
    assert teacher_forced_logprobs(model, PROMPTS, [[], []], return_logits=True).logits.shape == (2, 0, TINY_VOCAB_SIZE)
    assert not scores.logprobs.requires_grad
    try:
        with_grad = teacher_forced_logprobs(model, PROMPTS, CONTS, grad=True, batch_size=1)
        assert with_grad.logprobs.requires_grad
        with_grad.sequence_logprob().sum().backward()
        grad = model.get_input_embeddings().weight.grad
        assert grad is not None and grad.abs().sum() > 0
    finally:
        model.zero_grad(set_to_none=True)  # leave the shared model as we found it


class _PlainForward(torch.nn.Module):
    """A causal LM behind a bare ``forward`` (no ``logits_to_keep``; optionally no ``position_ids``)."""

    def __init__(self, model):
        super().__init__()
        self.inner = model

    def get_input_embeddings(self):
        return self.inner.get_input_embeddings()


class _WithPositions(_PlainForward):
    def forward(self, input_ids, attention_mask=None, position_ids=None, use_cache=None):
        return self.inner(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids)


class _WithoutPositions(_PlainForward):
    def forward(self, input_ids, attention_mask=None, use_cache=None):
        return self.inner(input_ids=input_ids, attention_mask=attention_mask)


@pytest.mark.parametrize("family", ["gpt2", "opt"])
def test_any_forward_without_logits_to_keep(causal_lm):
    """The fallback for models whose forward has no ``logits_to_keep`` slices the full logits at the same offset."""
    expected = teacher_forced_logprobs(causal_lm, PROMPTS, CONTS, return_logits=True)
    plain = teacher_forced_logprobs(_WithPositions(causal_lm), PROMPTS, CONTS, return_logits=True, batch_size=1)
    torch.testing.assert_close(plain.logprobs, expected.logprobs, equal_nan=True, atol=1e-5, rtol=0)
    torch.testing.assert_close(plain.logits, expected.logits, equal_nan=True, atol=1e-5, rtol=0)
    # no position_ids in the signature: scored without them (logged once; right for OPT, which uses the mask)
    without = teacher_forced_logprobs(_WithoutPositions(causal_lm), PROMPTS, CONTS)
    if causal_lm.config.model_type == "opt":
        torch.testing.assert_close(without.logprobs, expected.logprobs, equal_nan=True, atol=1e-5, rtol=0)


P, C = PROMPTS, CONTS


@pytest.mark.parametrize(
    "args, kwargs, error, match",
    [
        ((P, C[:1]), {}, ValueError, "batch size mismatch: prompt_ids has 2 rows but continuation_ids has 1"),
        (([[1, 2], []], C), {}, ValueError, "prompt row 1 is empty.*prepend a BOS"),
        ((torch.tensor([[1, 2]]), [[3]]), {"prompt_mask": torch.tensor([[0, 0]])}, ValueError, "prompt row 0 is empty"),
        (([[], []], C), {}, ValueError, "prompt row 0 is empty"),
        (([], []), {}, ValueError, "no rows"),
        ((P, [[5, TINY_VOCAB_SIZE], [1]]), {}, ValueError, r"continuation_ids\[0, 1\] = 128 is outside .*\[0, 128\)"),
        (([[1, -5]], [[3]]), {}, ValueError, r"prompt_ids\[0, 1\] = -5 is outside"),
        ((torch.tensor([[1, 2]]), [[3]]), {"prompt_mask": torch.tensor([[1, 0]])}, ValueError, "not left-padded"),
        (([[1]], torch.tensor([[3, 4]])), {"continuation_mask": torch.tensor([[0, 1]])}, ValueError, "not right-padded"),
        ((P, C), {"prompt_mask": torch.ones(2, 7)}, ValueError, "only accepted with a tensor"),
        ((torch.tensor([[1, 2]]), [[3]]), {"prompt_mask": torch.ones(1, 3)}, ValueError, r"shape \(1, 3\)"),
        ((torch.tensor([[1, 2]]), [[3]]), {"prompt_mask": torch.tensor([[2, 1]])}, ValueError, "only 0/1"),
        ((torch.tensor([[1.0, 2.0]]), [[3]]), {}, TypeError, "integer token ids.*float32"),
        (([[1, 2.5]], [[3]]), {}, TypeError, "integer token ids, got 2.5"),
        (("hello", [[3]]), {}, TypeError, "list of id lists"),
        ((P, C), {"batch_size": 0}, ValueError, "batch_size must be a positive int"),
    ],
)
def test_teacher_forcing_bad_inputs(causal_lms, args, kwargs, error, match):
    with pytest.raises(error, match=match):
        teacher_forced_logprobs(causal_lms["llama"], *args, **kwargs)


def test_vocab_logprobs_needs_logits(causal_lms):
    with pytest.raises(ValueError, match="return_logits=True"):
        teacher_forced_logprobs(causal_lms["llama"], P, C).vocab_logprobs()


# --------------------------------------------------------------------------------------------------------------------
# Greedy reference
# --------------------------------------------------------------------------------------------------------------------


def test_greedy_reference_matches_naive_argmax(causal_lm):
    prompts = _random_prompts([3, 8, 5, 2], seed=3)
    n = 6
    naive = [_naive_greedy(causal_lm, p, n) for p in prompts]
    # batch_size=3: the length-sorted batches mix prompt lengths 8/5/3 and then 2
    ref = greedy_reference(causal_lm, prompts, max_new_tokens=n, batch_size=3, eos_token_id=[], progress=False)
    assert ref["prompt_index"][:] == [0, 1, 2, 3]
    assert ref["prompt_ids"][:] == prompts
    assert ref["continuation_ids"][:] == naive
    assert ref["num_new_tokens"][:] == [n] * 4 and not any(ref["stopped_at_eos"][:])

    # EOS = a token the first row produces mid-way: that row stops there (EOS kept), others as the naive loop says
    eos = naive[0][2]
    stopped = greedy_reference(causal_lm, prompts, max_new_tokens=n, batch_size=3, eos_token_id=eos, progress=False)
    naive_eos = [_naive_greedy(causal_lm, p, n, eos=(eos,)) for p in prompts]
    assert stopped["continuation_ids"][:] == naive_eos
    assert len(naive_eos[0]) <= 3 and naive_eos[0][-1] == eos
    assert stopped["stopped_at_eos"][:] == [eos in c for c in naive_eos]

    # DTM identity: teacher-forced argmax on the model's own greedy path reproduces it (FDT(F, F) = N)
    scores = teacher_forced_logprobs(causal_lm, ref["prompt_ids"], ref["continuation_ids"])
    assert torch.equal(scores.predicted_ids, scores.token_ids)


def test_greedy_reference_strings_default_eos_and_progress(causal_lms, tokenizer, capsys):
    model = causal_lms["qwen2"]
    texts = ["Hello", "A longer prompt"]
    ref = greedy_reference(model, texts, max_new_tokens=3, tokenizer=tokenizer, progress=True)
    assert "greedy reference" in capsys.readouterr().err
    assert ref.column_names == ["prompt_index", "prompt", "prompt_ids", "continuation_ids", "num_new_tokens",
                                "stopped_at_eos"]
    assert ref["prompt"][:] == texts
    assert ref["prompt_ids"][:] == tokenizer(texts)["input_ids"]
    assert ref["continuation_ids"][:] == [_naive_greedy(model, p, 3, eos=(EOS_ID,)) for p in ref["prompt_ids"]]
    assert json.loads(ref.info.description)["eos_token_id"] == [EOS_ID]  # None = the model's generation_config
    greedy_reference(model, texts, max_new_tokens=3, tokenizer=tokenizer, progress=False)
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize(
    "prompts, kwargs, error, match",
    [
        ([], {}, ValueError, "prompts is empty"),
        ([[1, 2], []], {}, ValueError, "prompt 1 is empty"),
        (["hi"], {}, ValueError, "string prompts need a tokenizer"),
        (["hi", [1, 2]], {}, TypeError, "mixes strings and id lists"),
        ([[1, TINY_VOCAB_SIZE + 5]], {}, ValueError, r"token id 133 outside the vocabulary \[0, 128\)"),
        (torch.tensor([[1, 2]]), {}, TypeError, "not a padded tensor"),
        ([[1, 2]], {"max_new_tokens": 0}, ValueError, "max_new_tokens must be a positive int, got 0"),
        ([[1, 2]], {"batch_size": 0}, ValueError, "batch_size must be a positive int, got 0"),
        ([[1, 2]], {"eos_token_id": "x"}, TypeError, "eos_token_id must be"),
    ],
)
def test_greedy_reference_bad_inputs(causal_lms, prompts, kwargs, error, match):
    kwargs = {"max_new_tokens": 2, "progress": False, **kwargs}
    with pytest.raises(error, match=match):
        greedy_reference(causal_lms["gpt2"], prompts, **kwargs)


def test_greedy_reference_cache(causal_lms, tmp_path):
    model = copy.deepcopy(causal_lms["gpt_neox"])  # a private copy: we wrap generate and edit a weight
    calls = []
    generate = model.generate

    def counting_generate(*args, **kwargs):
        calls.append(1)
        return generate(*args, **kwargs)

    model.generate = counting_generate
    prompts = _random_prompts([4, 6, 3], seed=4)

    def run(**overrides):
        kwargs = dict(max_new_tokens=4, cache_dir=tmp_path, progress=False, eos_token_id=[], batch_size=2)
        return greedy_reference(model, prompts, **{**kwargs, **overrides})

    first = run()
    # 2 batches, plus the one-off padding check of the first (padded) batch: its 2 prompts decoded alone
    assert len(calls) == 4 and len(list(tmp_path.iterdir())) == 1
    entry = next(tmp_path.iterdir())
    assert (entry / "hf_ext_cache_key.json").exists()
    assert first["continuation_ids"][:] == [_naive_greedy(model, p, 4) for p in prompts]

    again = run(batch_size=3)  # batch_size is not part of the key
    assert len(calls) == 4, "the second call must load from disk, not generate"
    assert again.to_dict() == first.to_dict() and again.features == first.features
    assert json.loads(again.info.description)["cache_key"] in entry.name

    run(max_new_tokens=5)  # new key
    assert len(calls) == 6 and len(list(tmp_path.iterdir())) == 2
    run(eos_token_id=[7])  # new key
    assert len(calls) == 8 and len(list(tmp_path.iterdir())) == 3
    with torch.no_grad():
        model.get_output_embeddings().weight.view(-1)[17] += 1e-4  # one weight
    run()
    assert len(calls) == 10 and len(list(tmp_path.iterdir())) == 4
    assert not any(p.name.count(".tmp-") for p in tmp_path.iterdir())


def test_weights_fingerprint(causal_lms):
    model = causal_lms["opt"]
    twin = copy.deepcopy(model)
    for exact in (False, True):
        assert weights_fingerprint(model, exact=exact) == weights_fingerprint(twin, exact=exact)
    weight = twin.get_input_embeddings().weight
    with torch.no_grad():
        weight[5, 3] = torch.nextafter(weight[5, 3], torch.tensor(1.0))  # one ulp
        one_ulp = {e: weights_fingerprint(twin, exact=e) for e in (False, True)}
        weight[5, 3] = model.get_input_embeddings().weight[5, 3]
        assert weights_fingerprint(twin) == weights_fingerprint(model)
        weight[[5, 6]] = weight[[6, 5]].clone()  # swap two rows: same sum, different order
        swapped = {e: weights_fingerprint(twin, exact=e) for e in (False, True)}
    for exact in (False, True):
        assert one_ulp[exact] != weights_fingerprint(model, exact=exact)
        assert swapped[exact] != weights_fingerprint(model, exact=exact)


def test_dataset_round_trip(causal_lms, tmp_path):
    model = causal_lms["opt"]
    ref = greedy_reference(model, _random_prompts([5, 2, 7], seed=5), max_new_tokens=4, eos_token_id=[], progress=False)
    ref.save_to_disk(str(tmp_path / "ref"))
    from datasets import load_from_disk

    loaded = load_from_disk(str(tmp_path / "ref"))
    assert loaded.to_dict() == ref.to_dict() and loaded.features == ref.features
    assert loaded.info.description == ref.info.description
    a = teacher_forced_logprobs(model, ref["prompt_ids"], ref["continuation_ids"])
    b = teacher_forced_logprobs(model, loaded["prompt_ids"], loaded["continuation_ids"])
    torch.testing.assert_close(a.logprobs, b.logprobs, equal_nan=True, atol=0, rtol=0)


def _ignores_padding_lm():
    """A tiny Llama whose forward drops the attention mask and position ids: left padding changes its results."""
    from transformers import LlamaForCausalLM

    from hf_ext.testing import tiny_causal_lm_config

    class IgnoresPadding(LlamaForCausalLM):
        def forward(self, input_ids=None, attention_mask=None, position_ids=None, **kwargs):
            return super().forward(input_ids=input_ids, **kwargs)

    torch.manual_seed(0)
    return IgnoresPadding(tiny_causal_lm_config("llama")).eval()


def test_model_that_ignores_padding_is_scored_and_decoded_row_by_row():
    from hf_ext.core.model_checks import padding_exact

    model = _ignores_padding_lm()
    prompts, conts = _random_prompts([7, 2, 4], seed=3), _random_prompts([3, 5, 2], seed=4)
    batched = teacher_forced_logprobs(model, prompts, conts)
    assert padding_exact(model) is False
    for i, (p, c) in enumerate(zip(prompts, conts)):
        alone = teacher_forced_logprobs(model, [p], [c])
        torch.testing.assert_close(batched.logprobs[i, : len(c)], alone.logprobs[0], rtol=0, atol=0)

    model = _ignores_padding_lm()  # a fresh model: the check runs again, in greedy_reference this time
    ref = greedy_reference(model, prompts, max_new_tokens=4, eos_token_id=[], progress=False)
    assert padding_exact(model, "decode") is False
    assert ref["continuation_ids"][:] == [_naive_greedy(model, p, 4) for p in prompts]


def test_greedy_reference_padding_check_compares_up_to_eos(causal_lms):
    """A row that stops at EOS is padded by generate() up to the batch's longest row; the one-off padding check
    must not read that filler as a difference (an exact model keeps being decoded in batches)."""
    from hf_ext.core.model_checks import padding_exact

    model = copy.deepcopy(causal_lms["llama"])
    prompts = _random_prompts([6, 3], seed=5)
    naive = [_naive_greedy(model, p, 5) for p in prompts]
    eos = naive[0][0]  # the long prompt stops after one token; the short one must go on
    assert eos not in naive[1][:4], "pick another seed: both rows would stop"
    ref = greedy_reference(model, prompts, max_new_tokens=5, eos_token_id=[eos], batch_size=2, progress=False)
    assert padding_exact(model, "decode") is True
    assert ref["continuation_ids"][:] == [_naive_greedy(model, p, 5, eos=(eos,)) for p in prompts]
    assert ref["stopped_at_eos"][:] == [True, eos in naive[1]]
