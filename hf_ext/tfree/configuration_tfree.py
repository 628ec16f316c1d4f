"""``TFreeConfig``: hashing, loss and decoding fields of T-FREE around a nested decoder (backbone) config.

The backbone is any transformers decoder config (Llama, Mistral, Qwen2, GPT-NeoX, GPT-2 …), nested as
``text_config`` so that ``config.get_text_config(decoder=True)`` — what ``generate()`` and the KV cache read —
returns it. Field names follow spec ``tfree.md`` §12.

Example:
    >>> from transformers import LlamaConfig
    >>> cfg = TFreeConfig(text_config=LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
    ...                   num_attention_heads=4), hash_vocab_size=8000, num_activations=10)
    >>> cfg.get_text_config(decoder=True).model_type, cfg.hidden_size
    ('llama', 64)
"""

from __future__ import annotations

from typing import Any

from huggingface_hub.errors import StrictDataclassError
from transformers import AutoConfig, PretrainedConfig

from hf_ext.utils.validation import check_elements, check_float

from ..compat import sub_config_spec
from .hashing import validate_hash_params
from .wordsplit import EOT, SPECIAL_WORDS

#: Dictionary id of ``<|endoftext|>`` (special words come first in every decode dictionary).
EOT_ID = SPECIAL_WORDS.index(EOT)

__all__ = ["TFreeConfig", "DECODE_VARIANTS", "EMBEDDING_AGGREGATIONS"]

DECODE_VARIANTS = ("pos_minus_neg", "pos_only")
EMBEDDING_AGGREGATIONS = ("sum", "mean")

_SubConfigSpec = sub_config_spec()  # transformers ≥ 5.2x declares sub-configs with SubConfigSpec (hf_ext.compat)


class TFreeConfig(PretrainedConfig):
    """Configuration of :class:`~hf_ext.tfree.modeling_tfree.TFreeForCausalLM`.

    Args:
        text_config: the backbone decoder config (a ``PretrainedConfig`` or its dict with ``model_type``);
            default: a small Llama.
        hash_vocab_size: ``v``, rows of the sparse embedding and of the multi-label head.
        num_activations: ``m``, rows per trigram.
        num_lowercase_activations: ``k ≤ m``, rows shared with the lowercased trigram.
        hash_scheme: ``"aa_md5"`` (checkpoint-compatible) or ``"fast"``.
        trigram_unit: ``"byte"`` (reference code) or ``"char"`` (paper text).
        entire_words: hash whole words instead of trigrams.
        embedding_aggregation: ``"sum"`` (release) or ``"mean"`` over the ``m`` rows of a trigram.
        normalize_by_trigrams: divide a word's embedding by its trigram count.
        pos_weight: BCE weight of positive targets (release 300, trainer default 100).
        loss_scale: the loss is ``loss_scale × mean`` BCE (release 100, trainer default 1000).
        decode_variant: ``"pos_minus_neg"`` (reference "variant 2": mean activation on a word's pattern minus off it)
            or ``"pos_only"`` (paper Fig. 4, "variant 1").
        dictionary_logit_scale: multiplies the dictionary scores returned as ``logits`` (1.0 = the reference's
            softmax over raw scores; raise it to sharpen sampling).
        dictionary_size, dictionary_nnz: shapes of the saved decode-dictionary buffers (set by the model).

    Example:
        >>> TFreeConfig(hash_vocab_size=1000, num_activations=4).hash_vocab_size
        1000
    """

    model_type = "tfree"
    if _SubConfigSpec is not None:
        sub_configs_defaults = {"text_config": _SubConfigSpec(config_class=AutoConfig, model_type="llama")}
    else:  # pragma: no cover
        sub_configs = {"text_config": AutoConfig}

    def __init__(self, text_config: PretrainedConfig | dict | None = None, hash_vocab_size: int = 8000,
                 num_activations: int = 10, num_lowercase_activations: int = 0, hash_scheme: str = "aa_md5",
                 trigram_unit: str = "byte", entire_words: bool = False, embedding_aggregation: str = "sum",
                 normalize_by_trigrams: bool = False, pos_weight: float = 100.0, loss_scale: float = 1.0,
                 decode_variant: str = "pos_minus_neg", dictionary_logit_scale: float = 1.0,
                 dictionary_size: int = 0, dictionary_nnz: int = 0, **kwargs: Any):
        validate_hash_params(hash_vocab_size, num_activations, num_lowercase_activations, hash_scheme, trigram_unit)
        if embedding_aggregation not in EMBEDDING_AGGREGATIONS:
            raise ValueError(f"embedding_aggregation={embedding_aggregation!r}; use one of {EMBEDDING_AGGREGATIONS}")
        if decode_variant not in DECODE_VARIANTS:
            raise ValueError(f"decode_variant={decode_variant!r}; use one of {DECODE_VARIANTS}")
        for name, value in (("pos_weight", pos_weight), ("loss_scale", loss_scale),
                            ("dictionary_logit_scale", dictionary_logit_scale)):
            check_float(name, value, min=0, min_open=True)
        if text_config is None:
            from transformers import LlamaConfig

            text_config = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                                      num_key_value_heads=2, max_position_embeddings=512, vocab_size=16,
                                      tie_word_embeddings=False)
        elif isinstance(text_config, dict):
            text_config = dict(text_config)
            if "model_type" not in text_config:
                raise ValueError("text_config dict needs a 'model_type' (e.g. 'llama') to build the backbone config")
            text_config = AutoConfig.for_model(text_config.pop("model_type"), **text_config)
        elif not isinstance(text_config, PretrainedConfig):
            raise TypeError(f"text_config must be a PretrainedConfig or a dict, got {type(text_config).__name__}")
        if getattr(text_config, "is_encoder_decoder", False):
            raise ValueError(f"text_config ({text_config.model_type}) is an encoder-decoder; T-FREE needs a decoder-only "
                             "backbone (llama, mistral, qwen2, gpt_neox, gpt2 …)")
        hidden = getattr(text_config, "hidden_size", None)
        if not isinstance(hidden, int):  # BLT splits a byte-level model over stacks of several widths
            raise NotImplementedError(f"T-FREE cannot wrap the {text_config.model_type!r} backbone: its config has no "
                                      "integer hidden_size, the width of the word embeddings fed as inputs_embeds")
        check_elements("the trigram embedding [hash_vocab_size, hidden_size]", (hash_vocab_size, hidden))
        self.text_config = text_config
        self.hash_vocab_size, self.num_activations = hash_vocab_size, num_activations
        self.num_lowercase_activations, self.hash_scheme = num_lowercase_activations, hash_scheme
        self.trigram_unit, self.entire_words = trigram_unit, bool(entire_words)
        self.embedding_aggregation, self.normalize_by_trigrams = embedding_aggregation, bool(normalize_by_trigrams)
        self.pos_weight, self.loss_scale = float(pos_weight), float(loss_scale)
        self.decode_variant, self.dictionary_logit_scale = decode_variant, float(dictionary_logit_scale)
        self.dictionary_size, self.dictionary_nnz = int(dictionary_size), int(dictionary_nnz)
        kwargs.setdefault("tie_word_embeddings", False)
        # special ids are dictionary ids (the special words come first: <|endoftext|> is 1); generate() reads them
        # from the decoder config, so they are mirrored there
        eos, pad = kwargs.pop("eos_token_id", EOT_ID), kwargs.pop("pad_token_id", EOT_ID)
        bos = kwargs.pop("bos_token_id", None)
        super().__init__(**kwargs)
        self.eos_token_id, self.pad_token_id, self.bos_token_id = eos, pad, bos
        for name, value in (("eos_token_id", eos), ("pad_token_id", pad), ("bos_token_id", bos)):
            if value is not None or getattr(self.text_config, name, None) is not None:
                try:
                    setattr(self.text_config, name, value)
                except (TypeError, ValueError, StrictDataclassError):  # a strict field that takes no None (CWM's bos)
                    setattr(self.text_config, name, 0 if value is None else value)

    @property
    def hidden_size(self) -> int:
        """The backbone's hidden size ``h``."""
        return self.text_config.hidden_size

    @property
    def num_hidden_layers(self) -> int:
        """Decoder layers of the wrapped text model (``text_config.num_hidden_layers``)."""
        return self.text_config.num_hidden_layers

    def hash_config(self) -> dict[str, Any]:
        """The hashing fields (to compare with :meth:`TFreeTokenizer.hash_config`)."""
        return {"hash_vocab_size": self.hash_vocab_size, "num_activations": self.num_activations,
                "num_lowercase_activations": self.num_lowercase_activations, "hash_scheme": self.hash_scheme,
                "trigram_unit": self.trigram_unit, "entire_words": self.entire_words}

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        tc = self.text_config
        out["text_config"] = tc.to_dict() if isinstance(tc, PretrainedConfig) else tc
        return out
