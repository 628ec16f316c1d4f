"""One generic shrinker: a tiny, seeded instance of any transformers config class (and its sub-configs).

The shrinker walks the dataclass fields of a config class and replaces every size it knows by name (widths, depths,
heads, vocabulary, positions, expert counts, low-rank and state sizes) with a small value, keeps a mix of every
distinct layer type the default config has, remaps special-token ids into the small vocabulary, and recurses into
sub-configs (vision towers, text configs). Nothing is read from the Hub.

Per-family overrides (:data:`OVERRIDES`) exist only where the generic values break a family's own constraints;
each carries its reason.
"""

from __future__ import annotations

import dataclasses
from typing import Any

HIDDEN = 64
HEADS = 4
KV_HEADS = 2
HEAD_DIM = HIDDEN // HEADS
VOCAB = 256
POSITIONS = 128
#: Ids of the tiny text: bos, eos, pad; text tokens are drawn from ``[TEXT_LOW, TEXT_HIGH)``.
BOS, EOS, PAD = 1, 2, 0
TEXT_LOW, TEXT_HIGH = 4, 100

# Size fields by name -> tiny value (first match wins; names are the dataclass field names, aliases included).
_SIZES: dict[str, int] = {
    # widths
    "hidden_size": HIDDEN, "n_embd": HIDDEN, "d_model": HIDDEN, "dim": HIDDEN, "emb_dim": HIDDEN, "embed_dim": HIDDEN,
    "word_embed_proj_dim": HIDDEN, "embedding_size": HIDDEN, "projection_dim": HIDDEN, "out_hidden_size": HIDDEN,
    "vision_hidden_size": HIDDEN, "text_hidden_size": HIDDEN, "adapter_in_dim": HIDDEN, "adapter_out_dim": HIDDEN, "adapter_input_size": HIDDEN,
    "codebook_dim": HIDDEN, "backbone_hidden_size": HIDDEN, "attention_hidden_size": HIDDEN,
    "intermediate_size": 2 * HIDDEN, "ffn_dim": 2 * HIDDEN, "n_inner": 2 * HIDDEN, "d_ff": 2 * HIDDEN,
    "ffn_hidden_size": 2 * HIDDEN, "dim_ff": 2 * HIDDEN, "d_inner": 2 * HIDDEN, "dff": 2 * HIDDEN,
    "intermediate_size_mlp": 2 * HIDDEN, "dense_intermediate_size": 2 * HIDDEN,
    "first_dense_intermediate_size": 2 * HIDDEN, "prefix_dense_intermediate_size": 2 * HIDDEN,
    "mlp_only_intermediate_size": 2 * HIDDEN, "feed_forward_size": 2 * HIDDEN,
    "moe_intermediate_size": HIDDEN // 2, "shared_expert_intermediate_size": HIDDEN // 2,
    "moe_shared_expert_intermediate_size": HIDDEN // 2, "shared_experts_intermediate_size": HIDDEN // 2,
    "expert_ffn_hidden_size": HIDDEN // 2,
    # depths
    "num_hidden_layers": 2, "n_layer": 2, "num_layers": 2, "n_layers": 2, "num_decoder_layers": 2,
    "num_encoder_layers": 2, "depth": 2,
    # heads
    "num_attention_heads": HEADS, "encoder_attention_heads": HEADS, "n_head": HEADS, "n_heads": HEADS, "num_heads": HEADS, "attention_heads": HEADS,
    "num_key_value_heads": KV_HEADS, "num_kv_heads": KV_HEADS, "n_kv_heads": KV_HEADS, "multi_query_group_num": KV_HEADS,
    "head_dim": HEAD_DIM, "kv_channels": HEAD_DIM, "attention_head_dim": HEAD_DIM, "dim_head": HEAD_DIM,
    "attention_head_size": HEAD_DIM, "d_head": HEAD_DIM, "d_kv": HEAD_DIM,
    # vocabulary and positions
    "vocab_size": VOCAB, "n_positions": POSITIONS, "max_position_embeddings": POSITIONS, "n_ctx": POSITIONS,
    "max_seq_len": POSITIONS, "max_sequence_length": POSITIONS, "seq_length": POSITIONS,
    # mixture of experts
    "num_experts": 4, "num_local_experts": 4, "n_routed_experts": 4, "moe_num_experts": 4,
    "num_experts_per_tok": 2, "moe_k": 2, "top_k_experts": 2, "moe_topk": 2, "n_shared_experts": 1,
    "num_shared_experts": 1, "n_group": 1, "topk_group": 1, "first_k_dense_replace": 1,
    # multi-head latent attention
    "kv_lora_rank": 16, "q_lora_rank": 32, "qk_rope_head_dim": 8, "qk_nope_head_dim": 8, "v_head_dim": HEAD_DIM,
    # state-space / recurrent
    "state_size": 8, "ssm_state_size": 8, "mamba_d_state": 8, "conv_kernel": 4, "mamba_d_conv": 4,
    "n_groups": 1, "mamba_n_groups": 1, "mamba_ngroups": 1, "chunk_size": 16, "time_step_rank": 8,
    "lru_width": HIDDEN, "rotary_dim": HEAD_DIM // 2, "mamba_d_ssm": 2 * HIDDEN, "mamba_n_heads": 8,
    "mamba_num_heads": 8, "mamba_d_head": HEAD_DIM, "mamba_head_dim": HEAD_DIM, "mamba_chunk_size": 16,
    "linear_head_dim": HEAD_DIM, "linear_num_heads": HEADS, "hidden_size_global": HIDDEN,
    "encoder_hash_byte_group_vocab": 512, "vocab_size_per_layer_input": VOCAB, "hidden_size_per_layer_input": 16,
    "moe_hidden_size": HIDDEN // 2, "projector_hidden_size": HIDDEN, "vision_output_dim": HIDDEN,
    "projector_input_dim": HIDDEN, "projector_output_dim": HIDDEN, "attention_chunk_size": 8,
    "local_attention_window_len": 8,
    # sparse-attention indexers (DSA)
    "index_n_heads": HEADS, "index_head_dim": HEAD_DIM, "indexer_n_heads": HEADS, "indexer_head_dim": HEAD_DIM,
    "index_num_heads": HEADS,
    # vision towers
    "image_size": 32, "patch_size": 8,
}


def _layer_type_mix(default_types: list, n: int) -> list:
    """``n`` layer types covering every distinct type of ``default_types`` (in order of first appearance)."""
    distinct = list(dict.fromkeys(default_types))
    out = [distinct[i % len(distinct)] for i in range(max(n, len(distinct)))]
    return out


# Fields set even when the default is ``None`` (``None`` there means "derive from a size we replaced", and some
# families read them before deriving).
_ALWAYS = {"head_dim": HEAD_DIM, "n_group": 1, "topk_group": 1, "num_key_value_heads": KV_HEADS}
_EXPERT_COUNTS = ("num_experts", "num_local_experts", "n_routed_experts", "moe_num_experts")


def _get(obj, name):
    """``getattr`` that tolerates per-layer attributes transformers refuses to read globally."""
    try:
        return getattr(obj, name, None)
    except Exception:  # AmbiguousGlobalPerLayerAttributeError and friends
        return obj.__dict__.get(name)


def _fields(cls) -> dict[str, Any]:
    return {f.name: f for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else {}


def _scaled_sections(sections: list[int], target: int) -> list[int]:
    """``sections`` rescaled to sum to ``target``; the rounding remainder goes to the first section whose size is
    unique, so that sections the family needs equal (Ernie-4.5-VL stacks its h and w sections) stay equal."""
    total = sum(sections)
    new = [max(1, v * target // total) for v in sections]
    spare = next((i for i, v in enumerate(sections) if sections.count(v) == 1), 0)
    new[spare] += target - sum(new)
    return new


def _rescale_sections(rope: Any, head: int, factor: float = 1.0) -> Any:
    """Multimodal-rope ``mrope_section`` lists rescaled to sum to half the rotary dimension: ``head`` (the head
    size) times the ``partial_rotary_factor`` of the same rope dict (else ``factor``), halved."""
    if isinstance(rope, dict):
        factor = rope.get("partial_rotary_factor", factor)
        target = int(head * factor) // 2
        out = {}
        for key, value in rope.items():
            if key == "mrope_section" and isinstance(value, (list, tuple)) and sum(value) != target:
                out[key] = _scaled_sections(list(value), target)
            else:
                out[key] = _rescale_sections(value, head, factor)
        return out
    return rope


def shrink_kwargs(cls, default) -> dict[str, Any]:
    """Keyword arguments that make ``cls`` tiny, derived from its fields and its default instance ``default``."""
    fields = _fields(cls)
    subs = dict(getattr(default, "sub_configs", None) or {})
    kwargs: dict[str, Any] = {}
    for name in fields:
        value = _get(default, name)
        if name in subs or (value is not None and hasattr(value, "to_dict") and hasattr(value, "model_type")):
            if value is None:
                continue
            kwargs[name] = shrink_config(type(value), default=value)
            continue
        # a size of 0 means "this part is absent" (no per-layer inputs, no rotary part): kept absent
        if name in _SIZES and isinstance(value, int) and not isinstance(value, bool):
            kwargs[name] = _SIZES[name] if value != 0 else 0
        elif isinstance(value, bool) and fields[name].default is not dataclasses.MISSING and value != fields[name].default:
            kwargs[name] = value  # a switch the parent config (or the caller's default) turned: kept
        elif name in _ALWAYS and value is None:
            kwargs[name] = _ALWAYS[name]
    if any(isinstance(_get(default, k), int) for k in _EXPERT_COUNTS if k in fields) and "num_experts_per_tok" in fields:
        kwargs["num_experts_per_tok"] = 2
    # token ids: bos/eos/pad fixed, any other special id moved to the top of the tiny vocabulary
    if True:
        spare = VOCAB - 1
        for name in fields:
            if not (name.endswith("_token_id") or name.endswith("_token_index") or name.endswith("_id")):
                continue
            value = _get(default, name)
            if name in ("bos_token_id", "eos_token_id", "pad_token_id"):
                if value is not None:
                    kwargs[name] = {"bos_token_id": BOS, "eos_token_id": EOS, "pad_token_id": PAD}[name]
            elif isinstance(value, int) and not isinstance(value, bool) and value >= TEXT_HIGH:
                kwargs[name] = spare
                spare -= 1
    # equalities the family's default keeps (multi-head not grouped; MLA's rotary head = head_dim) stay true
    for a, b in (("num_key_value_heads", "num_attention_heads"), ("head_dim", "qk_rope_head_dim")):
        if a in kwargs and b in kwargs and _get(default, a) == _get(default, b):
            kwargs[a] = kwargs[b]
    if "qk_head_dim" in fields and isinstance(_get(default, "qk_head_dim"), int) and "qk_rope_head_dim" in kwargs:
        kwargs["qk_head_dim"] = kwargs["qk_rope_head_dim"] + kwargs.get("qk_nope_head_dim", 0)
    # per-layer lists (layer types, block types, attention patterns): one entry per distinct kind, and the depth
    # raised to cover them all, so that a hybrid keeps every kind of layer it has
    depth_keys = [k for k in ("num_hidden_layers", "n_layer", "num_layers", "n_layers") if k in kwargs]
    default_depth = _get(default, depth_keys[0]) if depth_keys else None
    if depth_keys and isinstance(default_depth, int) and default_depth > 1:
        mixes = {}
        for name in fields:
            value = _get(default, name)
            if (isinstance(value, (list, tuple)) and len(value) == default_depth
                    and all(isinstance(v, (str, int, bool)) or v is None for v in value)):
                mixes[name] = value
        depth = max([kwargs[depth_keys[0]]] + [len(set(v)) for v in mixes.values()])
        for name, value in mixes.items():
            kwargs[name] = _layer_type_mix(list(value), depth)
        for k in depth_keys:
            kwargs[k] = depth
    if "sliding_window" in fields and isinstance(_get(default, "sliding_window"), int):
        kwargs["sliding_window"] = 8
    rope = _get(default, "rope_parameters")
    if "rope_parameters" in fields and isinstance(rope, dict):
        head = kwargs.get("qk_rope_head_dim") or kwargs.get("head_dim") or HEAD_DIM
        scaled = _rescale_sections(rope, head, _factor(default))
        if scaled != rope:
            kwargs["rope_parameters"] = scaled
    for name in ("attention_dropout", "hidden_dropout", "resid_pdrop", "embd_pdrop", "attn_pdrop", "dropout",
                 "hidden_dropout_prob", "attention_probs_dropout_prob", "activation_dropout", "embedding_dropout"):
        if name in fields and isinstance(_get(default, name), float):
            kwargs[name] = 0.0
    return kwargs


def _factor(config) -> float:
    """The config's own ``partial_rotary_factor`` (1.0 where it has none; a rope dict's entry wins over it)."""
    factor = _get(config, "partial_rotary_factor")
    return factor if isinstance(factor, float) else 1.0


def _modeling_sections(config_cls) -> list[int] | None:
    """The ``mrope_section`` default the family's modeling file falls back to when the config has none
    (``rope_parameters.get("mrope_section", [22, 22, 20])``: its source names the sections), else ``None``."""
    import importlib.util
    import re

    name = config_cls.__module__.replace(".configuration_", ".modeling_")
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin:
        return None
    with open(spec.origin, encoding="utf-8") as handle:
        source = handle.read()
    if "mrope_section" not in source:
        return None
    found = re.search(r"""["']mrope_section["']\s*,\s*\[([\d,\s]+)\]""", source)
    return [int(v) for v in found.group(1).split(",") if v.strip()] if found else [16, 24, 24]


def _fix_rope_sections(config, seen=None) -> None:
    """Rescale ``mrope_section`` of rope parameters that ``__post_init__`` filled in (in place, sub-configs too)."""
    seen = set() if seen is None else seen
    if id(config) in seen:
        return
    seen.add(id(config))
    rope = config.__dict__.get("rope_parameters")
    if isinstance(rope, dict):
        head = config.__dict__.get("qk_rope_head_dim") or config.__dict__.get("head_dim") or HEAD_DIM
        sections = _modeling_sections(type(config))
        if sections is not None:
            # the modeling code falls back to its full-size sections when the config has none: rescaled below
            inner = [d for d in rope.values() if isinstance(d, dict)] or [rope]
            for d in inner:
                d.setdefault("mrope_section", list(sections))
        scaled = _rescale_sections(rope, head, _factor(config))
        rope.clear()
        rope.update(scaled)
    for value in list(config.__dict__.values()):
        if hasattr(value, "to_dict") and hasattr(value, "model_type") and hasattr(value, "__dict__"):
            _fix_rope_sections(value, seen)


def shrink_config(cls, *, default=None, **overrides):
    """A tiny instance of config class ``cls``: generic sizes, then ``overrides``.

    An override that is a ``dict`` for a field holding a sub-config (``text_config={...}``) is applied to that
    sub-config's own tiny kwargs instead of replacing it; one that names a ``model_type`` fills a sub-config that is
    ``None`` by default with that type's tiny config.
    """
    if default is None:
        default = cls()
    kwargs = shrink_kwargs(cls, default)
    for name, value in overrides.items():
        sub = _get(default, name)
        if sub is None and isinstance(value, dict) and "model_type" in value:  # a sub-config None by default
            from transformers import AutoConfig

            value = dict(value)
            sub = AutoConfig.for_model(value.pop("model_type"))
        if isinstance(value, dict) and hasattr(sub, "to_dict") and hasattr(sub, "model_type"):
            kwargs[name] = shrink_config(type(sub), default=sub, **value)
        else:
            kwargs[name] = value
    config = cls(**kwargs)
    _fix_rope_sections(config)
    return config
