"""The measuring bench of ``hf-ext reproduce dtm``: FDT/SDT, perplexity, KL and top-1 flips of a compressed model.

A :class:`Bench` holds, for one base model and one text split (:mod:`hf_ext.reproduce.texts`):

* greedy reference continuations of prompts cut from the text (FDT/SDT, teacher-forced: :mod:`hf_ext.dtm`);
* text chunks for perplexity and for KL / flip rate against the base, whose reference distribution is kept as a
  compact top-K cache (:class:`~hf_ext.dtm.logit_cache.ReferenceLogits`);
* optionally the base's input of every layer (:func:`hf_ext.core.layers.forward_with_layer_inputs`), so that a
  perturbation of layer ``l`` is scored by running layers ``l…`` only (:func:`hf_ext.core.layers.run_layers`).

:meth:`Bench.measure` scores the model as it is (call it inside a compression context manager).

Example:
    >>> from hf_ext.testing import tiny_causal_lm, tiny_tokenizer
    >>> bench = Bench(tiny_causal_lm("llama"), tiny_tokenizer(), "calibration", prompts=2, texts=2,
    ...               prompt_tokens=8, new_tokens=4, text_tokens=16, topk=8)
    >>> bench.measure()["fdt"]  # the base reproduces its own reference
    4.0
"""

from __future__ import annotations

import math
from typing import Any

import torch

from hf_ext.core.inputs import position_ids_from_mask, prepare_batch

from .texts import paragraphs


class Bench:
    """Reference data and metrics of one base model on one text split.

    Args:
        model: the base causal LM (its current weights are the reference).
        tokenizer: its tokenizer.
        split: ``"calibration"`` (plans are chosen on it) or ``"heldout"`` (plans are judged on it).
        prompts: number of FDT prompts; texts: number of perplexity/KL chunks.
        prompt_tokens, new_tokens, text_tokens: lengths (tokens) of prompts, reference continuations, chunks.
        topk: K of the compact reference-logit cache.
        batch_size: rows per forward.
        keep_hidden: store the base's input of every layer for :meth:`measure` ``(start_layer=l)``.
    """

    def __init__(self, model, tokenizer, split: str, *, prompts: int, texts: int, prompt_tokens: int, new_tokens: int,
                 text_tokens: int, topk: int = 64, batch_size: int = 4, keep_hidden: bool = False):
        from hf_ext.dtm import reference
        from hf_ext.dtm.logit_cache import ReferenceLogits

        self.model, self.batch_size = model, batch_size
        paras = paragraphs(split)
        if len(paras) < prompts + texts:
            raise ValueError(f"the {split} split has {len(paras)} paragraphs; asked for {prompts} prompts + {texts} texts")
        enc = [tokenizer(p, add_special_tokens=True)["input_ids"] for p in paras[: prompts + texts]]
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        ref = reference(model, [e[:prompt_tokens] for e in enc[:prompts]], max_new_tokens=new_tokens, eos_token_id=[],
                        progress=False)
        self.prompt_ids = [list(r) for r in ref["prompt_ids"]]
        self.continuations = [list(r) for r in ref["continuation_ids"]]
        self.text_ids = [e[:text_tokens] for e in enc[prompts:]]
        self.pad = pad
        self.source = {"prompts": prompts, "texts": texts, "prompt_tokens": prompt_tokens, "new_tokens": new_tokens,
                       "text_tokens": text_tokens, "split": split}
        self.hidden: dict[str, list[tuple[torch.Tensor, ...]]] | None = None
        logits = []
        for ids, mask in self._text_batches():
            logits.append(self._logits_at_text(self._forward(ids, mask, keep_hidden, "text"), mask))
        full = torch.cat(logits)
        self.reference = ReferenceLogits.from_logits(full, topk)
        self.vocab_size = full.shape[-1]
        self.positions = full.shape[0]
        if keep_hidden:
            for ids, mask in self._ref_batches():
                self._forward(ids, mask, True, "ref")

    # ---------------------------------------------------------------------------------------------- batches
    def _pad_left(self, rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        batch = prepare_batch(self.model, rows, pad_token_id=self.pad, position_ids=False)
        return batch["input_ids"], batch["attention_mask"]

    def _ref_batches(self):
        rows = [p + c for p, c in zip(self.prompt_ids, self.continuations)]
        for k in range(0, len(rows), self.batch_size):
            yield self._pad_left(rows[k : k + self.batch_size])

    def _text_batches(self):
        for k in range(0, len(self.text_ids), self.batch_size):
            yield self._pad_left(self.text_ids[k : k + self.batch_size])

    @torch.no_grad()
    def _forward(self, ids, mask, keep_hidden: bool = False, kind: str = "", start_layer: int = 0, batch: int = 0):
        pos = position_ids_from_mask(mask)
        if start_layer:
            from hf_ext.core.layers import run_layers

            states = self.hidden[kind][batch]
            return run_layers(self.model, states[start_layer], start_layer, mask, pos, return_logits=True,
                              input_ids=ids, context=getattr(states, "context", None))
        if not keep_hidden:
            return self.model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False).logits
        from hf_ext.core.layers import forward_with_layer_inputs

        # each layer's input, what run_layers resumes from (Mamba's output_hidden_states holds layer outputs)
        out, states = forward_with_layer_inputs(self.model, input_ids=ids, attention_mask=mask, position_ids=pos,
                                                use_cache=False)
        self.hidden = self.hidden or {"text": [], "ref": []}
        self.hidden[kind].append(states)
        return out.logits

    @staticmethod
    def _logits_at_text(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``[positions, V]`` logits predicting every real next token of left-padded rows."""
        keep = (mask[:, :-1] & mask[:, 1:]).bool()
        return logits[:, :-1][keep].float()

    # ---------------------------------------------------------------------------------------------- metrics
    @torch.no_grad()
    def measure(self, start_layer: int = 0) -> dict[str, Any]:
        """FDT/SDT (means over prompts), perplexity, KL and flip rate (means over text positions) of the model now.

        Args:
            start_layer: with ``keep_hidden``, resume from the base's hidden states at this layer (the model's
                layers before it must be unchanged).
        """
        from hf_ext.dtm import divergence_from_ids

        preds = []
        for b, (ids, mask) in enumerate(self._ref_batches()):
            logits = self._forward(ids, mask, kind="ref", start_layer=start_layer, batch=b)
            preds.append(logits[:, -len(self.continuations[0]) - 1 : -1].argmax(-1))
        res = divergence_from_ids(torch.cat(preds), torch.tensor(self.continuations))
        nll, kl, flips, row = [], [], [], 0
        for b, (ids, mask) in enumerate(self._text_batches()):
            logits = self._logits_at_text(self._forward(ids, mask, kind="text", start_layer=start_layer, batch=b), mask)
            targets = ids[:, 1:][(mask[:, :-1] & mask[:, 1:]).bool()]
            nll.append(-logits.log_softmax(-1).gather(-1, targets[:, None]).squeeze(-1))
            sub = _slice(self.reference, row, row + logits.shape[0])
            kl.append(sub.kl(logits))
            flips.append(sub.flips(logits))
            row += logits.shape[0]
        return {"fdt": float(res.fdt.double().mean()), "sdt": float(res.sdt.double().mean()),
                "fdt_full_share": float((res.fdt >= res.num_tokens).double().mean()),
                "ppl": math.exp(float(torch.cat(nll).double().mean())), "kl": float(torch.cat(kl).double().mean()),
                "flip": float(torch.cat(flips).double().mean())}

    @torch.no_grad()
    def check_cache(self, compress) -> dict[str, float]:
        """KL and flips of the first text batch from the compact cache vs from the base's full logits.

        Args:
            compress: a context manager that compresses the model in place.

        Returns:
            ``{"positions", "kl_cache", "kl_full", "kl_abs_diff_max", "flip_cache", "flip_full"}``.
        """
        from hf_ext.dtm.logit_cache import kl_from_logits

        ids, mask = next(self._text_batches())
        base = self._logits_at_text(self._forward(ids, mask), mask)
        with compress:
            cand = self._logits_at_text(self._forward(ids, mask), mask)
        sub = _slice(self.reference, 0, base.shape[0])
        kl_cache, kl_full = sub.kl(cand), kl_from_logits(base, cand)
        return {"positions": int(base.shape[0]), "kl_cache": float(kl_cache.double().mean()),
                "kl_full": float(kl_full.double().mean()), "kl_abs_diff_max": float((kl_full - kl_cache).abs().max()),
                "flip_cache": float(sub.flips(cand).double().mean()),
                "flip_full": float((base.argmax(-1) != cand.argmax(-1)).double().mean())}


def _slice(ref, start: int, end: int):
    from hf_ext.dtm.logit_cache import ReferenceLogits

    return ReferenceLogits(ref.logprobs[start:end], ref.indices[start:end], ref.tail_logmass[start:end], ref.vocab_size)


def spearman(x: list[float], y: list[float]) -> float:
    """Spearman rank correlation (average ranks for ties).

    Example:
        >>> spearman([1, 2, 3, 4], [10, 20, 30, 35])
        1.0
    """
    def ranks(v):
        t = torch.tensor(v, dtype=torch.float64)
        order = torch.argsort(t)
        r = torch.empty_like(t)
        r[order] = torch.arange(1, len(v) + 1, dtype=torch.float64)
        for value in t.unique():
            tie = t == value
            r[tie] = r[tie].mean()
        return r

    if len(x) != len(y) or len(x) < 2:
        raise ValueError(f"spearman needs two equally long lists of >= 2 values, got {len(x)} and {len(y)}")
    rx, ry = ranks(x), ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denom = float((rx.square().sum() * ry.square().sum()).sqrt())
    return float((rx * ry).sum()) / denom if denom else float("nan")
