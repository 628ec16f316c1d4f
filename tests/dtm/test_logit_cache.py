"""The compact top-K reference-logit cache against full-logit KL and argmax flips."""

import pytest
import torch

from hf_ext.dtm.logit_cache import ReferenceLogits, kl_from_logits


def _pair(seed, n=40, v=300, scale=4.0, noise=0.5):
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(n, v, generator=g) * scale
    return base, base + noise * torch.randn(n, v, generator=g)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_exact_with_all_tokens_and_a_lower_bound_below(seed):
    base, cand = _pair(seed)
    full = kl_from_logits(base, cand)
    assert torch.allclose(ReferenceLogits.from_logits(base, 300).kl(cand), full, atol=1e-5)
    for k in (1, 5, 50):
        approx = ReferenceLogits.from_logits(base, k).kl(cand)
        assert torch.all(approx <= full + 1e-5)  # coarse-graining the tail never raises KL (log-sum inequality)
    gap = [float((full - ReferenceLogits.from_logits(base, k).kl(cand)).mean()) for k in (1, 10, 100)]
    assert gap[0] >= gap[1] >= gap[2] >= -1e-6


def test_flips_are_exact_and_kl_matches_a_naive_loop():
    base, cand = _pair(3, n=6, v=20)
    cache = ReferenceLogits.from_logits(base, 4)
    assert torch.equal(cache.flips(cand), base.argmax(-1) != cand.argmax(-1))
    p, q = base.softmax(-1).double(), cand.softmax(-1).double()
    for i in range(6):
        top = torch.topk(p[i], 4).indices.tolist()
        rp, rq = 1 - sum(p[i, j] for j in top), 1 - sum(q[i, j] for j in top)
        naive = sum(p[i, j] * torch.log(p[i, j] / q[i, j]) for j in top) + rp * torch.log(rp / rq)
        assert float(cache.kl(cand)[i]) == pytest.approx(float(naive), abs=1e-5)


def test_save_load_and_sizes(tmp_path):
    base, _ = _pair(4, n=7, v=50)
    cache = ReferenceLogits.from_logits(base, 8)
    back = ReferenceLogits.load(cache.save(tmp_path / "c"))
    assert torch.equal(back.logprobs, cache.logprobs) and torch.equal(back.indices, cache.indices)
    assert back.vocab_size == 50 and back.k == 8 and len(back) == 7
    assert cache.nbytes == 7 * (8 * 8 + 4)
    assert ReferenceLogits.full_nbytes(7, 262144) == 7 * 262144 * 2
    with pytest.raises(FileNotFoundError):
        ReferenceLogits.load(tmp_path / "missing")


def test_bad_inputs():
    base, cand = _pair(5, n=3, v=10)
    with pytest.raises(ValueError, match="k must"):
        ReferenceLogits.from_logits(base, 0)
    with pytest.raises(ValueError, match="positions, vocab"):
        ReferenceLogits.from_logits(base[0], 2)
    with pytest.raises(ValueError, match="candidate logits"):
        ReferenceLogits.from_logits(base, 2).kl(cand[:2])
