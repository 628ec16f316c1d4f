"""Turning models into T-FREE models: :func:`convert_to_tfree` and the reference-checkpoint converter.

* :func:`convert_to_tfree` keeps an existing transformers causal LM's decoder (for continued training) and swaps
  its token embedding and LM head for a fresh T-FREE sparse embedding (``EmbeddingBag(v, h)``) and multi-label head
  (``Linear(h, v)``).
* :func:`convert_reference_checkpoint` converts a checkpoint saved by the T-FREE reference code (Aleph-Alpha/trigrams:
  ``transformer/transformer.pt`` + ``transformer_config.yaml``, ``tokenizer/tokenizer_config.yaml`` [+
  ``tokenizer.pt``]) into a folder that loads with ``AutoModelForCausalLM``. The key names, the MLP roles and the
  rotary layout are those of the reference's ``TransformerLMHeadModel`` (read from its source; see
  :data:`REFERENCE_KEY_MAP`): its MLP is ``dense_out(silu(dense_in(x)) * swiglu(x))`` (``dense_in`` is the gate),
  and its rotary embedding rotates interleaved pairs ``(2i, 2i+1)``, so the query/key rows are permuted per head for
  Llama's half-split ``rotate_half`` (:func:`interleaved_to_half_split`). hf_ext ships no weights (the release's
  licence is non-commercial): users convert their own local copy.

Example:
    >>> from hf_ext.testing import tiny_causal_lm
    >>> tfree = convert_to_tfree(tiny_causal_lm("llama"), hash_vocab_size=512, num_activations=4)
    >>> tfree.embed.weight.shape
    torch.Size([512, 64])
"""

from __future__ import annotations

import contextlib
import copy
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from hf_ext.utils.logging import get_logger

from .configuration_tfree import TFreeConfig
from .modeling_tfree import TFreeForCausalLM

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from .hashing import TrigramHasher
    from .tokenization_tfree import TFreeTokenizer

logger = get_logger(__name__)

__all__ = ["REFERENCE_KEY_MAP", "check_reference_hash_table", "convert_reference_checkpoint", "convert_to_tfree",
           "interleaved_to_half_split", "map_reference_state_dict"]


def convert_to_tfree(model: PreTrainedModel, *, tokenizer: TFreeTokenizer | None = None,
                     hash_vocab_size: int = 8000, num_activations: int = 10, num_lowercase_activations: int = 0,
                     hash_scheme: str = "aa_md5", **config_kwargs: Any) -> TFreeForCausalLM:
    """A :class:`TFreeForCausalLM` with ``model``'s decoder weights and a new T-FREE embedding and head.

    Args:
        model: a transformers causal LM (``AutoModelForCausalLM``; any decoder-only family).
        tokenizer: optional :class:`TFreeTokenizer` whose word list becomes the decode dictionary (its hashing
            fields override the keyword arguments).
        hash_vocab_size, num_activations, num_lowercase_activations, hash_scheme, **config_kwargs: :class:`TFreeConfig`.

    Returns:
        The new model (same dtype and device as ``model``; the original is not modified).

    Raises:
        TypeError: ``model`` is not a transformers model; ValueError: encoder-decoder models.
    """
    from transformers import PreTrainedModel

    if not isinstance(model, PreTrainedModel):
        raise TypeError(f"convert_to_tfree expects a transformers PreTrainedModel, got {type(model).__name__}")
    if tokenizer is not None:
        hc = tokenizer.hash_config()
        hash_vocab_size, num_activations = hc["hash_vocab_size"], hc["num_activations"]
        num_lowercase_activations, hash_scheme = hc["num_lowercase_activations"], hc["hash_scheme"]
        config_kwargs.setdefault("trigram_unit", hc["trigram_unit"])
        config_kwargs.setdefault("entire_words", hc["entire_words"])
    text_config = copy.deepcopy(model.config.get_text_config(decoder=True))
    cfg = TFreeConfig(text_config=text_config, hash_vocab_size=hash_vocab_size, num_activations=num_activations,
                      num_lowercase_activations=num_lowercase_activations, hash_scheme=hash_scheme, **config_kwargs)
    param = next(model.parameters())
    tfree = TFreeForCausalLM(cfg).to(device=param.device, dtype=param.dtype)
    backbone = model.base_model
    state = {k: v for k, v in backbone.state_dict().items()}
    embed_name = _input_embedding_name(backbone)
    state = {k: v for k, v in state.items() if not k.startswith(embed_name + ".")}
    missing, unexpected = tfree.model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith(embed_name + ".")]
    if missing or unexpected:
        raise ValueError(f"could not map {type(model).__name__}'s decoder onto the T-FREE backbone: missing {missing}, "
                         f"unexpected {unexpected}")
    if tokenizer is not None:
        tfree.set_decode_dictionary(tokenizer)
    return tfree


def _input_embedding_name(backbone) -> str:
    emb = backbone.get_input_embeddings()
    for name, module in backbone.named_modules():
        if module is emb:
            return name
    raise ValueError(f"{type(backbone).__name__} has no input embedding module")


# ------------------------------------------------------------------------------------------ reference checkpoints

#: ``TransformerLMHeadModel.state_dict()`` names of the reference code (Aleph-Alpha/trigrams) → hf_ext names
#: (regex → replacement). Biases exist when the reference config has ``bias_terms: true`` (its default).
REFERENCE_KEY_MAP: dict[str, str] = {
    r"^transformer\.embeddings\.embedding\.weight$": "embed.weight",
    r"^transformer\.layers\.(\d+)\.attention\.query\.(weight|bias)$": r"model.layers.\1.self_attn.q_proj.\2",
    r"^transformer\.layers\.(\d+)\.attention\.key\.(weight|bias)$": r"model.layers.\1.self_attn.k_proj.\2",
    r"^transformer\.layers\.(\d+)\.attention\.value\.(weight|bias)$": r"model.layers.\1.self_attn.v_proj.\2",
    r"^transformer\.layers\.(\d+)\.attention\.dense\.(weight|bias)$": r"model.layers.\1.self_attn.o_proj.\2",
    # the reference MLP is dense_out(silu(dense_in(x)) * swiglu(x)): dense_in is the gate, swiglu the up projection
    r"^transformer\.layers\.(\d+)\.mlp\.dense_in\.(weight|bias)$": r"model.layers.\1.mlp.gate_proj.\2",
    r"^transformer\.layers\.(\d+)\.mlp\.swiglu\.(weight|bias)$": r"model.layers.\1.mlp.up_proj.\2",
    r"^transformer\.layers\.(\d+)\.mlp\.dense_out\.(weight|bias)$": r"model.layers.\1.mlp.down_proj.\2",
    r"^transformer\.layers\.(\d+)\.(input_layernorm|post_attention_layernorm)\.weight$": r"model.layers.\1.\2.weight",
    r"^transformer\.norm\.weight$": "model.norm.weight",
    r"^lm_head\.weight$": "lm_head.weight",
}
#: Defaults of the reference's ``TransformerArchitectureConfig`` for fields a config file omits (saved files list all).
REFERENCE_ARCH_DEFAULTS: dict[str, Any] = {
    "norm": "rms", "mlp_type": "simple_gelu", "bias_terms": True, "embedding_aggregation": "mean",
    "embedding_normalization": False, "rotary_embedding_base": 10000, "sequence_length": 2048, "mlp_factor": 4.0,
    "layernorm_epsilon": 1e-5, "precision": "float32",
}
#: Loss fields of the 7B release config, used when a checkpoint has no ``context/config.yml`` (training config).
RELEASE_LOSS_FIELDS = {"loss_pos_weight": 300.0, "loss_scale": 100.0}
_ROTARY_PROJ = re.compile(r"\.self_attn\.[qk]_proj\.(weight|bias)$")
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
#: Words whose trigrams probe a reference hash table: mixed case (lowercase sharing), digits, non-ASCII bytes.
_PROBE_WORDS = ("Hello", "hello", "World", "THE", "tokenizer", "Straße", "über", "2024", "naïve", "x_y")


def interleaved_to_half_split(weight: torch.Tensor, num_heads: int) -> torch.Tensor:
    """Permute a query/key projection's output rows from interleaved rotary pairs to Llama's half split.

    The reference rotates the pairs ``(x[2i], x[2i+1])`` of each head (a complex multiplication); Llama's
    ``rotate_half`` rotates ``(x[i], x[i + d/2])`` with the same frequencies ``base^(−2i/d)``. Moving row ``2i`` to
    ``i`` and row ``2i + 1`` to ``i + d/2`` within every head makes both compute the same attention scores (``q·k`` is
    unchanged when queries and keys share the permutation).

    Args:
        weight: ``[num_heads · d, ...]``: a weight ``[out, in]`` or a bias ``[out]``.
        num_heads: number of heads ``H`` (``d`` must be even).

    Returns:
        The permuted tensor (same shape).

    Example:
        >>> interleaved_to_half_split(torch.arange(8), num_heads=2).tolist()  # head_dim 4: rows 0, 2 | 1, 3
        [0, 2, 1, 3, 4, 6, 5, 7]
    """
    rows = weight.shape[0]
    if rows % num_heads or (rows // num_heads) % 2:
        raise ValueError(f"cannot split {rows} query/key rows into {num_heads} heads of even size")
    d = rows // num_heads
    return weight.reshape(num_heads, d // 2, 2, *weight.shape[1:]).transpose(1, 2).reshape(weight.shape)


def map_reference_state_dict(state: dict[str, torch.Tensor], num_attention_heads: int, *,
                             key_map: dict[str, str] | None = None) -> dict[str, torch.Tensor]:
    """Rename a reference state dict to hf_ext names and permute the query/key rows for Llama's rotary layout.

    Args:
        state: the reference ``TransformerLMHeadModel.state_dict()`` (``transformer.layers.0.attention.query.weight``
            …).
        num_attention_heads: heads of the reference model (for the rotary permutation).
        key_map: regex → replacement rules (default :data:`REFERENCE_KEY_MAP`; the first matching rule wins).

    Raises:
        ValueError: keys that no rule maps (listed), or two keys mapped to the same name.
    """
    rules = [(re.compile(p), r) for p, r in (key_map or REFERENCE_KEY_MAP).items()]
    mapped: dict[str, torch.Tensor] = {}
    unmapped = []
    for key, tensor in state.items():
        for pat, rep in rules:
            if pat.search(key):
                name = pat.sub(rep, key)
                if name in mapped:
                    raise ValueError(f"two checkpoint keys map to {name!r} (the second is {key!r}); fix key_map")
                mapped[name] = interleaved_to_half_split(tensor, num_attention_heads) if _ROTARY_PROJ.search(name) \
                    else tensor
                break
        else:
            unmapped.append(key)
    if unmapped:
        raise ValueError(f"{len(unmapped)} checkpoint keys match no rule of key_map (first: {unmapped[:8]}); this is "
                         "not the reference layout (transformer.embeddings.embedding.weight, "
                         "transformer.layers.N.attention.query.weight, …) or pass key_map={regex: hf_name}")
    return mapped


def _read_yaml(path: Path, section: str) -> dict[str, Any]:
    import yaml

    data = yaml.safe_load(path.read_text(encoding="utf-8"))  # the reference writes JSON, which is YAML
    if not isinstance(data, dict):
        raise ValueError(f"{path} does not hold a mapping of config fields, got {type(data).__name__}")
    return data.get(section, data) if isinstance(data.get(section), dict) else data


def _load_pt(path: Path) -> Any:
    import collections

    try:  # the reference may pickle a Counter of words next to tensors; weights_only allows it explicitly
        ctx = torch.serialization.safe_globals([collections.Counter])
    except AttributeError:  # pragma: no cover - torch < 2.5
        ctx = contextlib.nullcontext()
    with ctx:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # legacy (non-zip) files cannot be memory-mapped
            return torch.load(path, map_location="cpu", weights_only=True)


def _llama_config(arch: dict[str, Any]):
    from transformers import LlamaConfig

    missing = [f for f in ("hidden_size", "num_layers", "num_attention_heads") if f not in arch]
    if missing:
        raise ValueError(f"transformer_config.yaml lacks {missing}; it must be the reference architecture config")
    if arch["norm"] != "rms":
        raise ValueError(f"norm={arch['norm']!r}: only 'rms' (RMSNorm, as the release) maps onto the Llama backbone")
    if arch["mlp_type"] != "swiglu":
        raise ValueError(f"mlp_type={arch['mlp_type']!r}: only 'swiglu' (as the release) maps onto the Llama backbone")
    h, heads = int(arch["hidden_size"]), int(arch["num_attention_heads"])
    if h % heads or (h // heads) % 2:
        raise ValueError(f"hidden_size={h} must split into num_attention_heads={heads} heads of even size")
    bias = bool(arch["bias_terms"])
    return LlamaConfig(hidden_size=h, intermediate_size=int(h * float(arch["mlp_factor"])),
                       num_hidden_layers=int(arch["num_layers"]), num_attention_heads=heads, num_key_value_heads=heads,
                       head_dim=h // heads, hidden_act="silu", rms_norm_eps=float(arch["layernorm_epsilon"]),
                       max_position_embeddings=int(arch["sequence_length"]), attention_bias=bias, mlp_bias=bias,
                       rope_parameters={"rope_type": "default", "rope_theta": float(arch["rotary_embedding_base"])},
                       vocab_size=16, tie_word_embeddings=False)


def check_reference_hash_table(table: torch.Tensor, hasher: TrigramHasher,
                               words: Sequence[str] = _PROBE_WORDS) -> int:
    """Compare rows of a reference ``trigram_to_vocab`` table with hf_ext's hashing; returns the rows compared.

    Args:
        table: the reference's ``[256³, m]`` trigram → activation-rows table (``tokenizer.pt``; may be memory-mapped).
        hasher: the :class:`~hf_ext.tfree.hashing.TrigramHasher` the converted model uses.
        words: words whose byte trigrams are probed (each row compared as a set: the reference sorts rows before
            its lowercase overwrite).

    Raises:
        ValueError: a row differs (the checkpoint was hashed with another scheme, ``v`` or ``m``).
    """
    ids = np.unique(np.concatenate([hasher.trigram_ids(w) for w in words]))
    ids = ids[ids < table.shape[0]]
    ours = hasher.rows(ids)
    theirs = table[torch.from_numpy(ids)].numpy()
    for tid, a, b in zip(ids.tolist(), np.sort(ours, 1), np.sort(theirs, 1)):
        if not np.array_equal(a, b):
            raise ValueError(f"the checkpoint's hash table differs from hf_ext's aa_md5 hashing at trigram id {tid}: "
                             f"checkpoint rows {b.tolist()}, computed {a.tolist()} (v={hasher.v}, m={hasher.m}, "
                             f"k={hasher.k}); this checkpoint cannot be converted to the aa_md5 scheme")
    return len(ids)


def convert_reference_checkpoint(checkpoint_dir: str | Path, out_dir: str | Path, *,
                                 key_map: dict[str, str] | None = None, words: list[str] | None = None,
                                 dtype: torch.dtype | None = None, check_hash_table: bool = True) -> Path:
    """Convert a checkpoint of the T-FREE reference code into an hf_ext folder (``config.json`` + safetensors + tokenizer).

    Input layout (``Trainer.save`` of Aleph-Alpha/trigrams): ``transformer/transformer.pt`` (the state dict; read
    with ``weights_only=True``, memory-mapped), ``transformer/transformer_config.yaml`` (architecture fields:
    ``hidden_size``, ``num_layers``, ``num_attention_heads``, ``mlp_factor``, ``rotary_embedding_base``,
    ``layernorm_epsilon``, ``sequence_length``, ``bias_terms``, ``norm``, ``mlp_type``, ``embedding_aggregation``,
    ``embedding_normalization``, ``precision``), ``tokenizer/tokenizer_config.yaml`` (``vocab_size``,
    ``vocab_population``, ``vocab_population_partial_lowercase``, ``entire_words``), optionally
    ``tokenizer/tokenizer.pt`` (its ``words`` become the decode dictionary; its hash table is checked against
    hf_ext's hashing) and ``context/config.yml`` (``training.loss_pos_weight`` / ``loss_scale``; else the 7B
    release's 300 / 100).

    Args:
        checkpoint_dir: the reference checkpoint folder (one iteration).
        out_dir: output folder (created).
        key_map: override of :data:`REFERENCE_KEY_MAP`.
        words: decode dictionary (default: ``tokenizer.pt``'s ``words``, else only the special words).
        dtype: dtype of the converted weights (default: the checkpoint's).
        check_hash_table: compare probe rows of ``tokenizer.pt``'s hash table with the aa_md5 scheme.

    Returns:
        ``out_dir`` (loads with ``AutoModelForCausalLM`` / ``AutoTokenizer`` once hf_ext is imported).

    Raises:
        FileNotFoundError: a missing file; ValueError: a config the Llama backbone cannot express (LayerNorm, GELU
        MLP), a hashing setting hf_ext does not reproduce, unmapped / missing keys, shape mismatches, a hash table
        that differs.

    Example:
        >>> convert_reference_checkpoint("tfree-7b/iter_0370000", "tfree-7b-hf")  # needs the 7B reference checkpoint  # doctest: +SKIP
    """
    from accelerate import init_empty_weights

    from .tokenization_tfree import TFreeTokenizer

    src, out = Path(checkpoint_dir), Path(out_dir)
    files = {"weights": src / "transformer" / "transformer.pt", "config": src / "transformer" / "transformer_config.yaml",
             "tokenizer config": src / "tokenizer" / "tokenizer_config.yaml"}
    for label, path in files.items():
        if not path.is_file():
            raise FileNotFoundError(f"reference checkpoint {label} file not found: {path}")
    arch = {**REFERENCE_ARCH_DEFAULTS, **_read_yaml(files["config"], "architecture")}
    kcfg = _read_yaml(files["tokenizer config"], "tokenizer")
    for field, ok in (("initialize", "hash"), ("lowercase", False), ("do_classic_tokenization", False)):
        if kcfg.get(field, ok) != ok:
            raise ValueError(f"tokenizer_config.yaml has {field}={kcfg[field]!r}; hf_ext reproduces only {field}={ok!r}")
    v, m = int(kcfg["vocab_size"]), int(kcfg["vocab_population"])
    k = int(kcfg.get("vocab_population_partial_lowercase", 0))
    if int(arch.get("vocab_size") or v) != v:
        raise ValueError(f"transformer vocab_size={arch['vocab_size']} differs from the tokenizer's vocab_size={v}")
    loss, loss_from = dict(RELEASE_LOSS_FIELDS), "7B release defaults"
    context = src / "context" / "config.yml"
    if context.is_file():
        training = _read_yaml(context, "training")
        loss.update({f: float(training[f]) for f in RELEASE_LOSS_FIELDS if f in training})
        loss_from = str(context.relative_to(src))
    cfg = TFreeConfig(text_config=_llama_config(arch), hash_vocab_size=v, num_activations=m,
                      num_lowercase_activations=k, hash_scheme="aa_md5", entire_words=bool(kcfg.get("entire_words")),
                      embedding_aggregation=str(arch["embedding_aggregation"]),
                      normalize_by_trigrams=bool(arch["embedding_normalization"]),
                      pos_weight=loss["loss_pos_weight"], loss_scale=loss["loss_scale"])
    state = _load_pt(files["weights"])
    if not isinstance(state, dict):
        raise ValueError(f"{files['weights']} holds a {type(state).__name__}, not a state dict")
    mapped = map_reference_state_dict(state, int(arch["num_attention_heads"]), key_map=key_map)
    target_dtype = dtype or _DTYPES.get(str(arch["precision"]), mapped.get("embed.weight", torch.empty(0)).dtype)
    with init_empty_weights(include_buffers=False):  # no second copy of a 7B model: parameters are assigned below
        model = TFreeForCausalLM(cfg)
    expected = model.state_dict()
    skip = ("model.embed_tokens.weight", "dict_indptr", "dict_indices", "dict_counts", "dict_trigrams")
    missing = [n for n in expected if n not in mapped and n not in skip]
    unexpected = [n for n in mapped if n not in expected]
    if missing or unexpected:
        raise ValueError(f"the converted state does not fit the model: missing {missing[:8]}, unexpected {unexpected[:8]}"
                         f" (bias_terms={arch['bias_terms']}, num_layers={arch['num_layers']})")
    for name, tensor in mapped.items():
        if tuple(tensor.shape) != tuple(expected[name].shape):
            raise ValueError(f"{name}: checkpoint shape {tuple(tensor.shape)} but the config implies "
                             f"{tuple(expected[name].shape)}")
    model.load_state_dict({n: t.to(target_dtype) for n, t in mapped.items()}, strict=False, assign=True)
    model.model.set_input_embeddings(torch.nn.Embedding(1, cfg.hidden_size, dtype=target_dtype))
    model.config.dtype = target_dtype
    tok_state = _load_pt(src / "tokenizer" / "tokenizer.pt") if (src / "tokenizer" / "tokenizer.pt").is_file() else {}
    tok_state = tok_state if isinstance(tok_state, dict) else {}
    if words is None and isinstance(tok_state.get("words"), list):
        words = [w for w in tok_state["words"] if isinstance(w, str) and w]
    if words is None:
        logger.warning("no decode dictionary given and none in tokenizer/tokenizer.pt: only the special words are "
                       "decodable; pass words=[...] (e.g. wordfreq.top_n_list('en', 100000))")
    tok = TFreeTokenizer(words=words, hash_vocab_size=v, num_activations=m, num_lowercase_activations=k,
                         entire_words=bool(kcfg.get("entire_words")))
    checked = 0
    table = tok_state.get("trigram_to_vocab")
    if check_hash_table and isinstance(table, torch.Tensor) and not cfg.entire_words:
        if tuple(table.shape[1:]) != (m,):
            raise ValueError(f"tokenizer.pt's trigram_to_vocab has shape {tuple(table.shape)}, expected [256³, {m}]")
        checked = check_reference_hash_table(table, tok.hasher)
    model.set_decode_dictionary(tok)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    record = {"source": str(src), "layout": "Aleph-Alpha/trigrams TransformerLMHeadModel",
              "rotary": "interleaved pairs permuted to Llama's half split", "loss_fields_from": loss_from,
              "hash_table_rows_checked": checked, "dictionary_words": model.dictionary_size}
    (out / "conversion.json").write_text(json.dumps(record, indent=1))
    return out
