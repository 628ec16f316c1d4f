"""The T-FREE decode dictionary: which words the model can emit, as a CSR matrix of their trigram patterns.

The dictionary lives on the model as four buffers saved with its weights (``dict_indptr`` ``[d + 1]``,
``dict_indices``/``dict_counts`` ``[nnz]``: each word's unique activation ids and their multiplicities, and
``dict_trigrams`` ``[d]``: its trigram count); :class:`DecodeDictionary` is the logic over them: building it from a
word list or a tokenizer, growing and truncating it, mapping word ids to their patterns (the embedding of
dictionary ids and word-id labels) and scoring every word from multi-label logits (decoding).
``TFreeForCausalLM.decode_dictionary`` returns it; the model's ``set_decode_dictionary`` & co. delegate to it.

Example:
    >>> from hf_ext.tfree import TFreeConfig, TFreeForCausalLM
    >>> model = TFreeForCausalLM(TFreeConfig(hash_vocab_size=1000, num_activations=4))
    >>> model.decode_dictionary.set(["hello", "world"])
    >>> model.decode_dictionary.size, tuple(model.decode_dictionary.scores(torch.zeros(3, 1000)).shape)
    (2, (3, 2))
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .hashing import TrigramHasher
from .pattern_cache import PatternCache

if TYPE_CHECKING:
    from .tokenization_tfree import TFreeTokenizer

__all__ = ["DecodeDictionary", "dictionary_fingerprint"]


def dictionary_fingerprint(words: Sequence[str]) -> str:
    """A short hash of a word list, stored in the config to check that a tokenizer's ids match the model's dictionary."""
    h = hashlib.sha1()
    for w in words:
        h.update(w.encode("utf-8") + b"\x00")
    return h.hexdigest()[:16]


class DecodeDictionary:
    """The decode dictionary of one :class:`~hf_ext.tfree.modeling_tfree.TFreeForCausalLM` (a view over its buffers).

    Args:
        model: the model owning the ``dict_*`` buffers and the config (``hash_vocab_size``, ``num_activations``,
            ``decode_variant``, ``dictionary_logit_scale`` …).
    """

    def __init__(self, model: Any):
        self.model = model

    @property
    def hasher(self) -> TrigramHasher:
        """The model's :class:`TrigramHasher` (the one that built the dictionary's patterns)."""
        return self.model.hasher

    @property
    def size(self) -> int:
        """Number of words in the decode dictionary (``d``)."""
        return int(self.model.dict_trigrams.numel())

    def patterns(self, words: Sequence[str], tokenizer: TFreeTokenizer | None = None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(indptr, data, trigrams)``: each word's activation-id multiset (CSR) and trigram count (the tokenizer's
        pattern cache computes them faster when given)."""
        if tokenizer is not None:
            return tokenizer.words_to_patterns(words)
        return PatternCache(self.hasher).csr(words)

    @staticmethod
    def unique_counts(indptr: np.ndarray, data: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Multiplicity lists (sorted per word) → unique ids + counts per word.

        Returns:
            ``(indptr [n+1], unique ids [nnz'], counts [nnz'])`` in CSR layout, ``n`` = number of words.
        """
        n = len(indptr) - 1
        row = np.repeat(np.arange(n), np.diff(indptr))
        first = np.ones(len(data), dtype=bool)
        first[1:] = (data[1:] != data[:-1]) | (row[1:] != row[:-1])
        starts = np.flatnonzero(first)
        counts = np.diff(np.append(starts, len(data)))
        new_indptr = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(np.bincount(row[starts], minlength=n), out=new_indptr[1:])
        return new_indptr, data[starts].astype(np.int64), counts

    def set(self, words_or_tokenizer: TFreeTokenizer | Sequence[str], *,
            tokenizer: TFreeTokenizer | None = None) -> None:
        """Replace the decode dictionary (e.g. with a ``wordfreq`` list, or a tokenizer's word list).

        Args:
            words_or_tokenizer: a :class:`TFreeTokenizer` (its word list, in id order; its hashing must match the
                config) or a sequence of words (their ids are their positions).
            tokenizer: optional tokenizer whose pattern cache computes the patterns faster.

        Raises:
            ValueError: an empty dictionary, or a tokenizer whose hashing differs from the config.
        """
        from .tokenization_tfree import TFreeTokenizer

        if isinstance(words_or_tokenizer, TFreeTokenizer):
            tokenizer = words_or_tokenizer
            words = tokenizer.words
        else:
            if isinstance(words_or_tokenizer, str) or not isinstance(words_or_tokenizer, Sequence):
                raise TypeError("set_decode_dictionary expects a TFreeTokenizer or a list of words, got "
                                f"{type(words_or_tokenizer).__name__}")
            words = list(words_or_tokenizer)
        if not words:
            raise ValueError("the decode dictionary is empty; pass at least one word (e.g. tokenizer.words or a "
                             "wordfreq list: wordfreq.top_n_list('en', 50000))")
        for w in words:
            if not isinstance(w, str) or not w:
                raise ValueError(f"dictionary words must be non-empty str, got {w!r}")
        if tokenizer is not None and tokenizer.hash_config() != self.model.config.hash_config():
            raise ValueError(f"the tokenizer hashes with {tokenizer.hash_config()} but the model with "
                             f"{self.model.config.hash_config()}; use a matching tokenizer")
        indptr, data, tri = self.patterns(words, tokenizer)
        indptr, idx, counts = self.unique_counts(indptr, data)
        dev = self.model.lm_head.weight.device
        self.model.dict_indptr = torch.from_numpy(indptr).to(dev)
        self.model.dict_indices = torch.from_numpy(idx).to(dev)
        self.model.dict_counts = torch.from_numpy(counts).to(dev)
        self.model.dict_trigrams = torch.from_numpy(tri).to(dev)
        self.model.config.dictionary_size, self.model.config.dictionary_nnz = len(words), int(len(idx))
        self.model.config.dictionary_fingerprint = dictionary_fingerprint(words)
        self.model._decode_words_cache = list(words)

    def add(self, words: Sequence[str], *, tokenizer: TFreeTokenizer | None = None) -> list[int]:
        """Append ``words`` to the decode dictionary (no de-duplication); returns their new ids.

        ``tokenizer``: optional tokenizer whose pattern cache computes the patterns faster.
        """
        if not words:
            return []
        indptr, data, tri = self.patterns(list(words), tokenizer)
        indptr, idx, counts = self.unique_counts(indptr, data)
        d0 = self.size
        dev = self.model.dict_indptr.device
        self.model.dict_indptr = torch.cat([self.model.dict_indptr, torch.from_numpy(indptr[1:]).to(dev) + self.model.dict_indptr[-1]])
        self.model.dict_indices = torch.cat([self.model.dict_indices, torch.from_numpy(idx).to(dev)])
        self.model.dict_counts = torch.cat([self.model.dict_counts, torch.from_numpy(counts).to(dev)])
        self.model.dict_trigrams = torch.cat([self.model.dict_trigrams, torch.from_numpy(tri).to(dev)])
        self.model.config.dictionary_size, self.model.config.dictionary_nnz = self.size, int(self.model.dict_indices.numel())
        return list(range(d0, d0 + len(words)))

    def truncate(self, size: int) -> None:
        """Keep only the first ``size`` dictionary words (undo :meth:`add`)."""
        if not 0 < size <= self.size:
            raise ValueError(f"size={size} must be in [1, {self.size}]")
        nnz = int(self.model.dict_indptr[size])
        self.model.dict_indptr = self.model.dict_indptr[: size + 1].clone()
        self.model.dict_indices = self.model.dict_indices[:nnz].clone()
        self.model.dict_counts = self.model.dict_counts[:nnz].clone()
        self.model.dict_trigrams = self.model.dict_trigrams[:size].clone()
        self.model.config.dictionary_size, self.model.config.dictionary_nnz = size, nnz

    def check_ids(self, ids: torch.Tensor) -> None:
        """Raise ``ValueError`` unless every id of ``ids`` is a dictionary word id."""
        d = self.size
        if d == 0:
            raise ValueError("the model's decode dictionary is empty: call model.set_decode_dictionary(tokenizer) "
                             "(or pass activation_ids instead of input_ids)")
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= d):
            raise ValueError(f"word ids must be in [0, {d}) (the decode dictionary), got range "
                             f"[{int(ids.min())}, {int(ids.max())}]; after encoding new words call "
                             "model.set_decode_dictionary(tokenizer) or use model.generate_text(...)")

    def rows(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(activation ids, counts, owning row, lengths)``: the flat unique activation ids and their counts of the
        dictionary words ``ids`` (1-D), the index in ``ids`` each belongs to, and each word's number of them."""
        starts = self.model.dict_indptr[ids]
        lens = self.model.dict_indptr[ids + 1] - starts
        total = int(lens.sum())
        row = torch.repeat_interleave(torch.arange(len(ids), device=ids.device), lens, output_size=total)
        first = torch.cumsum(lens, 0) - lens
        pos = torch.arange(total, device=ids.device) - first[row] + starts[row]
        return self.model.dict_indices[pos], self.model.dict_counts[pos], row, lens

    def scores(self, activation_logits: torch.Tensor) -> torch.Tensor:
        """Scores ``[..., d]`` of every dictionary word from multi-label logits ``[..., v]`` (sparse CSR product).

        ``pos_minus_neg``: ``S_w/(m·T_w) + (S_w − Σ_j a_j)/(v − m·T_w)``; ``pos_only``: ``S_w/(m·T_w)``, with
        ``a = σ(logits)`` and ``S_w`` the sum of ``a`` over the word's unique pattern; times ``dictionary_logit_scale``.
        """
        c = self.model.config
        d = self.size
        if d == 0:
            raise ValueError("the model's decode dictionary is empty: call model.set_decode_dictionary(tokenizer)")
        lead = activation_logits.shape[:-1]
        a = torch.sigmoid(activation_logits.reshape(-1, c.hash_vocab_size).float())
        with warnings.catch_warnings():  # "sparse CSR support is in beta" / invariant-check notices
            warnings.simplefilter("ignore", UserWarning)
            csr = torch.sparse_csr_tensor(self.model.dict_indptr, self.model.dict_indices,
                                          torch.ones(self.model.dict_indices.numel(), dtype=a.dtype, device=a.device),
                                          size=(d, c.hash_vocab_size))
            s = (csr @ a.T).T  # [N, d]
        mt = (c.num_activations * self.model.dict_trigrams).to(a.dtype)
        score = s / mt
        if c.decode_variant == "pos_minus_neg":
            score = score + (s - a.sum(-1, keepdim=True)) / (c.hash_vocab_size - mt).clamp(min=1)
        return (score * c.dictionary_logit_scale).reshape(*lead, d)
