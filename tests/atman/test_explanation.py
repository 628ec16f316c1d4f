"""AtMan explanations as data: detached results, JSON round trip, aggregation, step functions and contrastive targets.

References used:
* plain forwards written here: log-additive suppression with factor 0 removes keys exactly, which a plain forward
  does with ``attention_mask`` zeros at the unit's positions (explicit ``position_ids``); log-probabilities from
  ``torch.log_softmax`` on those logits, so "why A rather than B" is ``log p(A) − log p(B)`` computed directly;
* hand sums of the token-level Δ over the words / sentences of the prompt (spans found with ``str.split`` here);
* exact equality of the float32 values after ``json.dumps``/``json.loads``.
"""

from __future__ import annotations

import json

import pytest
import torch

from hf_ext.atman import AtManExplainer, Explanation
from hf_ext.testing import tiny_causal_lm

PROMPT, TARGET, FOIL = "the cat sat on", " mat", " rug"


def _grad_model(family="llama"):
    model = tiny_causal_lm(family, seed=3)
    assert all(p.requires_grad for p in model.parameters())  # the regression: parameters that require grad
    return model


def _plain_logprobs(model, tokenizer, prompt, target, masked_positions):
    """Per-token log p(target_t) with the given prompt positions removed from attention (plain forward)."""
    p_ids = tokenizer(prompt)["input_ids"]
    t_ids = tokenizer(target, add_special_tokens=False)["input_ids"]
    seq = torch.tensor([p_ids + t_ids[:-1]])
    mask = torch.ones_like(seq)
    mask[0, masked_positions] = 0
    with torch.no_grad():
        logits = model(seq, attention_mask=mask, position_ids=torch.arange(seq.shape[1]).view(1, -1)).logits
    logp = torch.log_softmax(logits[0, len(p_ids) - 1:].float(), -1)
    return logp[torch.arange(len(t_ids)), torch.tensor(t_ids)]


@pytest.mark.parametrize("pack", [True, False])
def test_results_are_detached_with_grad_requiring_params(tokenizer, pack):
    model = _grad_model()
    assert torch.is_grad_enabled()
    ex = AtManExplainer(model, tokenizer, progress=False, pack=pack, max_batch_size=3)
    for exp in (ex.explain(PROMPT, TARGET), ex.explain(PROMPT, TARGET, foil=FOIL, step="probability"),
                ex.explain_ids([1, 5, 6, 7], [8, 9])):
        assert exp.delta.grad_fn is None and not exp.delta.requires_grad
        assert exp.base_cross_entropy.grad_fn is None
        for post in ("none", "absolute", "square"):
            assert exp.scores(post).grad_fn is None
        assert exp.delta.numpy().shape == tuple(exp.delta.shape)  # the README example that failed
    assert torch.is_grad_enabled()  # the caller's grad mode is left as it was
    # a user's own tensor with history is detached too
    leaf = torch.ones(1, 1, requires_grad=True)
    exp = Explanation(units=exp.units[:1], delta=leaf * 2, target_tokens=["x"], base_cross_entropy=leaf[0] * 1)
    assert exp.delta.grad_fn is None and exp.scores().grad_fn is None


def test_json_round_trip_is_exact(tokenizer, tmp_path):
    ex = AtManExplainer(_grad_model("gpt2"), tokenizer, progress=False, conceptual_threshold=0.5)
    for exp in (ex.explain("a <b> cat. ok", TARGET, granularity="word"),
                ex.explain(PROMPT, TARGET, foil=FOIL, step="probability")):
        data = json.loads(json.dumps(exp.to_dict()))
        back = Explanation.from_dict(data)
        assert torch.equal(back.delta, exp.delta) and back.delta.dtype == torch.float32
        assert torch.equal(back.base_cross_entropy, exp.base_cross_entropy)
        for name in ("units", "target_tokens", "tokens", "offsets", "prompt", "target", "foil", "step", "mode",
                     "n_foil_tokens", "suppression_factor", "conceptual_threshold", "image_grid"):
            assert getattr(back, name) == getattr(exp, name), name
        path = exp.save(tmp_path / "sub" / "exp.json")
        loaded = Explanation.load(path)
        assert torch.equal(loaded.delta, exp.delta) and loaded.units == exp.units
        assert loaded.to_dict() == exp.to_dict()
    grid = Explanation.from_dict({**exp.to_dict(), "image_grid": [2, 3]})
    assert grid.image_grid == (2, 3)


def test_persistence_bad_input(tmp_path):
    with pytest.raises(FileNotFoundError, match="path="):
        Explanation.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="is not JSON"):
        Explanation.load(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="lacks the fields"):
        Explanation.from_dict({"prompt": "x"})
    with pytest.raises(ValueError, match="format"):
        Explanation.from_dict({"format": "something.else", "units": [], "delta": []})
    with pytest.raises(TypeError, match="must be a dict"):
        Explanation.from_dict([1, 2])


def test_aggregation_equals_hand_sums(tokenizer):
    prompt = "One two. Three four five!"
    exp = AtManExplainer(_grad_model(), tokenizer, progress=False).explain(prompt, " x y")
    by_char = {u.char_span[0]: row for u, row in zip(exp.units, exp.delta) if u.char_span}  # char tokenizer
    bos = [row for u, row in zip(exp.units, exp.delta) if not u.char_span]

    def span_sum(start, end):
        return torch.stack([by_char[i] for i in range(start, end)]).sum(0)

    words, cursor = [], 0
    for w in prompt.split(" "):
        s = prompt.index(w, cursor)
        words.append((w, s, s + len(w)))
        cursor = s + len(w)
    agg = exp.aggregate("word")
    assert [u.label for u in agg.units] == ["<s>"] + [w for w, _, _ in words]
    torch.testing.assert_close(agg.delta[0], bos[0])
    for k, (_, s, e) in enumerate(words):
        # the space before a word joins it (no Δ is dropped)
        torch.testing.assert_close(agg.delta[k + 1], span_sum(s - 1 if s else s, e), rtol=1e-6, atol=1e-7)
    sent = exp.aggregate("sentence", targets="sum")
    assert [u.label for u in sent.units] == ["<s>", "One two.", "Three four five!"]
    assert sent.delta.shape == (3, 1) and sent.target_tokens == [" x y"]
    torch.testing.assert_close(sent.delta[2, 0], span_sum(8, len(prompt)).sum(), rtol=1e-5, atol=1e-6)
    # word -> sentence equals token -> sentence; per target token or summed; totals are kept
    torch.testing.assert_close(agg.aggregate("sentence").delta, exp.aggregate("sentence").delta)
    torch.testing.assert_close(exp.aggregate(None, targets="sum").delta[:, 0], exp.delta.sum(1))
    torch.testing.assert_close(sent.delta.sum(), exp.delta.sum(), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="targets="):
        exp.aggregate("word", targets="mean")
    ids_only = AtManExplainer(_grad_model(), tokenizer, progress=False).explain_ids([1, 5, 6], [7])
    with pytest.raises(ValueError, match="needs the prompt string"):
        ids_only.aggregate("word")


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_contrastive_matches_naive_loop(tokenizer, family):
    model = _grad_model(family)
    ex = AtManExplainer(model, tokenizer, suppression_factor=0.0, max_batch_size=4, progress=False)
    exp = ex.explain(PROMPT, TARGET, granularity="word", foil=" ruggy")
    n_a = len(tokenizer(TARGET, add_special_tokens=False)["input_ids"])
    assert exp.n_foil_tokens == len(exp.target_tokens) - n_a == 6 and exp.foil == " ruggy"

    def diff(positions):
        return (_plain_logprobs(model, tokenizer, PROMPT, TARGET, positions).sum()
                - _plain_logprobs(model, tokenizer, PROMPT, " ruggy", positions).sum())

    base = diff([])
    naive = torch.stack([diff(u.positions) - base for u in exp.units])
    torch.testing.assert_close(exp.scores(), naive, atol=5e-5, rtol=1e-4)
    assert naive.abs().max() > 1e-3  # not vacuous
    torch.testing.assert_close(exp.aggregate(None, targets="sum").delta[:, 0], naive, atol=5e-5, rtol=1e-4)


def test_probability_step_matches_naive_loop(tokenizer):
    model = _grad_model("gpt2")
    ex = AtManExplainer(model, tokenizer, suppression_factor=0.0, max_batch_size=2, progress=False)
    exp = ex.explain(PROMPT, TARGET, step="probability")
    base = _plain_logprobs(model, tokenizer, PROMPT, TARGET, []).exp()
    naive = torch.stack([_plain_logprobs(model, tokenizer, PROMPT, TARGET, u.positions).exp() - base for u in exp.units])
    torch.testing.assert_close(exp.delta, naive, atol=2e-6, rtol=1e-4)
    assert exp.step == "probability" and naive.abs().max() > 1e-6
    contrast = ex.explain(PROMPT, TARGET, step="probability", foil=FOIL)
    base_b = _plain_logprobs(model, tokenizer, PROMPT, FOIL, []).exp()
    naive_b = torch.stack([_plain_logprobs(model, tokenizer, PROMPT, FOIL, u.positions).exp() - base_b for u in exp.units])
    torch.testing.assert_close(contrast.scores(), naive.sum(1) - naive_b.sum(1), atol=5e-6, rtol=1e-4)
    with pytest.raises(ValueError, match="step="):
        ex.explain(PROMPT, TARGET, step="logit")
    with pytest.raises(ValueError, match="foil="):
        ex.explain(PROMPT, TARGET, foil=FOIL, include_target=True)


def test_one_progress_bar_per_explanation(tokenizer, monkeypatch):
    """One bar over all of an explanation's perturbations (target and foil), advanced per forward, ending full."""
    import hf_ext.utils.progress as progress

    bars = []

    class Bar:  # records what the code does to its bar
        def __init__(self, iterable=None, **kw):
            self.kw, self.n, self.updates = kw, 0, []
            bars.append(self)

        def update(self, n=1):
            self.updates.append(n)
            self.n += n

        def refresh(self):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(progress, "progress_bar", Bar)
    for pack in (True, False):
        bars.clear()
        ex = AtManExplainer(_grad_model(), tokenizer, max_batch_size=2, pack=pack, progress=True)
        exp = ex.explain(PROMPT, TARGET, foil=FOIL)
        assert len(bars) == 1, [b.kw for b in bars]
        bar = bars[0]
        assert bar.kw["total"] == 2 * len(exp.units) and bar.n == bar.kw["total"]
        assert len([n for n in bar.updates if n]) > 2  # advanced per forward, not once per explanation
    # deletion_auc: one bar over all its curves (the tour showed one empty bar per curve before)
    from hf_ext.atman import deletion_auc

    bars.clear()
    ex = AtManExplainer(_grad_model(), tokenizer, max_batch_size=4, progress=True)
    deletion_auc(ex, PROMPT, TARGET, n_random=3)
    deletion = [b for b in bars if b.kw.get("desc") == "deletion"]
    assert len(deletion) == 1 and deletion[0].kw["total"] == 4 * (len(PROMPT) + 2) == deletion[0].n
