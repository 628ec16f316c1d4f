"""A compact reference-logit cache: the base model's top-K log-probabilities plus the remaining mass per position.

KL divergence against the base (llama.cpp's ``--kl-divergence``) and top-1 flips ("Accuracy is not all you need")
need the base model's distribution at every scored position. A full cache stores ``V`` logits per position
(262 144 for Gemma-3: 512 KiB per position in fp16, the 11 GiB files users complain about). This cache stores, per
position, the ``K`` largest log-probabilities (float32) with their token ids (int32) and the log of the probability
mass outside them: ``8K + 4`` bytes.

From it, with the candidate's full logits:

* **flips** are exact: the base's top-1 token is the first cached id.
* **KL(base ‖ candidate)** is computed over ``K + 1`` outcomes, the cached tokens and one "rest" bucket:
  ``Σ_{i≤K} p_i (log p_i − log q_i) + r_p (log r_p − log r_q)`` with ``r_q`` the candidate's mass outside the
  base's top-K. By the log-sum inequality it never exceeds the full KL, and it equals it when ``K = V``; the gap
  is ``r_p`` times the KL between the two distributions renormalised inside the tail, small when the base puts
  little mass there (:func:`kl_from_logits` gives the exact value to compare with).

Example:
    >>> import torch
    >>> base, cand = torch.randn(5, 50), torch.randn(5, 50)
    >>> cache = ReferenceLogits.from_logits(base, k=50)
    >>> bool(torch.allclose(cache.kl(cand), kl_from_logits(base, cand), atol=1e-5))
    True
    >>> small = ReferenceLogits.from_logits(base, k=8)
    >>> bool((small.kl(cand) <= kl_from_logits(base, cand) + 1e-6).all())
    True
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from hf_ext.utils.loading import load_safetensors, read_json, require_keys
from hf_ext.utils.validation import check_int


def kl_from_logits(base_logits: torch.Tensor, cand_logits: torch.Tensor) -> torch.Tensor:
    """Exact ``KL(softmax(base) ‖ softmax(cand))`` per row: ``[..., V]`` → ``[...]`` (float32)."""
    if base_logits.shape != cand_logits.shape:
        raise ValueError(f"base logits {tuple(base_logits.shape)} and candidate logits {tuple(cand_logits.shape)} differ")
    lp = base_logits.float().log_softmax(-1)
    lq = cand_logits.float().log_softmax(-1)
    return (lp.exp() * (lp - lq)).sum(-1).clamp_min(0)


def _log1mexp(x: torch.Tensor) -> torch.Tensor:
    """``log(1 − exp(x))`` for ``x ≤ 0``, stable near 0 (then ``−inf``) and for very negative ``x``."""
    x = x.clamp_max(0)
    return torch.where(x > -0.693, torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


@dataclass
class ReferenceLogits:
    """Top-K reference log-probabilities per position (see the module docstring).

    Attributes:
        logprobs: ``[N, K]`` float32, the base's K largest log-probabilities per position, descending.
        indices: ``[N, K]`` int32 token ids of ``logprobs``.
        tail_logmass: ``[N]`` float32, ``log(1 − Σ exp(logprobs))`` (``−inf`` when K covers everything).
        vocab_size: ``V``.
    """

    logprobs: torch.Tensor
    indices: torch.Tensor
    tail_logmass: torch.Tensor
    vocab_size: int

    @classmethod
    def from_logits(cls, logits: torch.Tensor, k: int) -> ReferenceLogits:
        """Build from the base's logits ``[N, V]`` (any float dtype)."""
        if logits.dim() != 2:
            raise ValueError(f"logits must be [positions, vocab], got shape {tuple(logits.shape)}")
        check_int("k", k, min=1, max=logits.shape[1])
        lp = logits.float().log_softmax(-1)
        top, idx = lp.topk(k, dim=-1)
        tail = _log1mexp(torch.logsumexp(top, -1)) if k < logits.shape[1] else torch.full((lp.shape[0],), float("-inf"))
        return cls(top.contiguous(), idx.to(torch.int32).contiguous(), tail, int(logits.shape[1]))

    @property
    def k(self) -> int:
        return int(self.logprobs.shape[1])

    def __len__(self) -> int:
        return int(self.logprobs.shape[0])

    @property
    def nbytes(self) -> int:
        """Bytes of the cached tensors."""
        return sum(t.numel() * t.element_size() for t in (self.logprobs, self.indices, self.tail_logmass))

    @staticmethod
    def full_nbytes(positions: int, vocab_size: int, bytes_per_logit: int = 2) -> int:
        """Bytes of a full-logit cache of ``positions`` rows (fp16 by default)."""
        return positions * vocab_size * bytes_per_logit

    def _check(self, cand_logits: torch.Tensor) -> torch.Tensor:
        if cand_logits.dim() != 2 or cand_logits.shape != (len(self), self.vocab_size):
            raise ValueError(f"candidate logits must be [{len(self)}, {self.vocab_size}], got {tuple(cand_logits.shape)}")
        return cand_logits.float().log_softmax(-1)

    def kl(self, cand_logits: torch.Tensor) -> torch.Tensor:
        """``[N]`` KL over the K cached tokens plus the rest bucket (a lower bound of the full KL)."""
        lq = self._check(cand_logits)
        idx = self.indices.long().to(lq.device)
        lp = self.logprobs.to(lq.device)
        lq_top = lq.gather(-1, idx)
        head = (lp.exp() * (lp - lq_top)).sum(-1)
        rp = self.tail_logmass.to(lq.device)
        rq = _log1mexp(torch.logsumexp(lq_top, -1))
        tail = torch.where(torch.isinf(rp), torch.zeros_like(rp), rp.exp() * (rp - rq))
        return (head + tail).clamp_min(0)

    def flips(self, cand_logits: torch.Tensor) -> torch.Tensor:
        """``[N]`` bool: the candidate's top-1 token differs from the base's."""
        return self._check(cand_logits).argmax(-1) != self.indices[:, 0].long().to(cand_logits.device)

    def save(self, path: str | Path) -> Path:
        """Write ``<path>/reference_logits.safetensors`` and ``reference_logits.json``; returns the folder."""
        from safetensors.torch import save_file

        from hf_ext.utils.saving import atomic_directory

        path = Path(path).expanduser()
        with atomic_directory(path) as staging:  # an interrupted save leaves the previous cache
            save_file({"logprobs": self.logprobs, "indices": self.indices, "tail_logmass": self.tail_logmass},
                      str(staging / "reference_logits.safetensors"))
            (staging / "reference_logits.json").write_text(json.dumps({"vocab_size": self.vocab_size, "k": self.k}))
        return path

    @classmethod
    def load(cls, path: str | Path) -> ReferenceLogits:
        """Read a cache written by :meth:`save`."""
        from hf_ext.utils.saving import verify_manifest

        path = Path(path).expanduser()
        if not (path / "reference_logits.safetensors").is_file():
            raise FileNotFoundError(f"no reference_logits.safetensors in {path}")
        verify_manifest(path)
        meta = read_json(path / "reference_logits.json", required=("vocab_size", "k"))
        t = load_safetensors(path / "reference_logits.safetensors")
        require_keys(t, ("logprobs", "indices", "tail_logmass"), path / "reference_logits.safetensors")
        return cls(t["logprobs"], t["indices"], t["tail_logmass"], int(meta["vocab_size"]))
