"""Which model types the conformance suite covers, and each one built tiny.

The denominator is every type of the installed transformers' ``MODEL_FOR_CAUSAL_LM_MAPPING_NAMES`` plus the
image-text-to-text types (``MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES``) whose config reaches a language model
through ``get_text_config()``. Exclusions are decided here, by code, only for what the issue allows: encoder-only
types (a masked-LM architecture, or a base model that is an ``…Encoder``) and encoder-decoder types
(``config.is_encoder_decoder``, or a VLM whose text config is one).
"""

from __future__ import annotations

import functools
import warnings

import torch

from .shrink import BOS, PAD, TEXT_HIGH, TEXT_LOW, shrink_config

FEATURES = ("anatomy", "run_layers", "attention_controls", "scoring", "dtm", "scar", "atman", "tfree", "multifusion")
#: Features every CI run checks for every type; the others run on a seeded rotating sample (all with ``--full``).
CORE_FEATURES = ("anatomy", "run_layers", "attention_controls", "scoring", "dtm")


@functools.lru_cache(maxsize=1)
def _mappings():
    from transformers.models.auto import modeling_auto as ma
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    return (ma.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES, ma.MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES,
            ma.MODEL_FOR_MASKED_LM_MAPPING_NAMES, ma.MODEL_MAPPING_NAMES, CONFIG_MAPPING)


def all_types() -> list[str]:
    """Every candidate type of the installed transformers, sorted."""
    causal, vlm, *_ = _mappings()
    return sorted(set(causal) | set(vlm))


def model_class_name(model_type: str) -> str:
    """The class a row tests: the image-text-to-text class where the type has one (the VLM), else the causal LM."""
    causal, vlm, *_ = _mappings()
    return vlm.get(model_type) or causal[model_type]


@functools.cache
def exclusion(model_type: str) -> str | None:
    """Why ``model_type`` is outside the denominator (``None``: it is in)."""
    causal, vlm, masked, base, configs = _mappings()
    if model_type in masked and model_type not in vlm:
        return "encoder-only (a masked-LM architecture)"
    if str(base.get(model_type, "")).endswith("Encoder"):
        return f"encoder-only (base model {base[model_type]})"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            config = configs[model_type]()
    except Exception:  # a default config that does not validate is the shrinker's problem, not an exclusion
        return None
    if getattr(config, "is_encoder_decoder", False):
        return "encoder-decoder"
    try:
        text = config.get_text_config(decoder=True)
    except ValueError:
        text = config
    if text is not config and getattr(text, "is_encoder_decoder", False):
        return f"encoder-decoder language model ({text.model_type})"
    return None


def denominator() -> list[str]:
    return [t for t in all_types() if exclusion(t) is None]


@functools.lru_cache(maxsize=1)
def _last_built():
    return {}


def build(model_type: str, seed: int = 0):
    """The tiny model of ``model_type`` (fp32, CPU, eval), cached per process for the last type asked for.

    Raises whatever the shrinker or the model raises: a type that does not build fails every cell.
    """
    cache = _last_built()
    if model_type in cache:
        return cache[model_type]
    cache.clear()
    import transformers

    _, _, _, _, configs = _mappings()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        config = shrink_config(configs[model_type], **OVERRIDES.get(model_type, {}))
        cls = getattr(transformers, model_class_name(model_type))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = cls(config).eval()
    cache[model_type] = model
    return model


def text_ids(batch: int, length: int, seed: int = 0) -> torch.Tensor:
    """``[batch, length]`` ids: BOS then random text ids in ``[TEXT_LOW, TEXT_HIGH)`` (below any special id)."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(TEXT_LOW, TEXT_HIGH, (batch, length), generator=gen)
    ids[:, 0] = BOS
    return ids


def left_padded(ids: torch.Tensor, pads: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Left-pad row ``b`` of ``ids`` by ``pads[b]`` (dropping its last tokens): ids, mask and position ids."""
    length = ids.shape[1]
    out = torch.full_like(ids, PAD)
    mask = torch.zeros_like(ids)
    for b, p in enumerate(pads):
        out[b, p:] = ids[b, : length - p]
        mask[b, p:] = 1
    return out, mask, (mask.cumsum(-1) - 1).clamp_min(0)


# Per-family overrides of the generic shrinker, each with the reason the generic values do not fit.
OVERRIDES: dict[str, dict] = {
    # Mamba-2 checks hidden_size * expand == num_heads * head_dim: 64 * 2 = 8 heads of 16
    "mamba2": {"num_heads": 8},
    # Jamba interleaves one attention layer every 8 (offset 4) and MoE every 2: with 2 layers there would be no
    # attention layer; period 2 keeps one Mamba and one attention layer (and one MoE block)
    "jamba": {"attn_layer_period": 2, "attn_layer_offset": 1, "expert_layer_period": 2, "expert_layer_offset": 1},
    # GPT-Neo expands attention_types ([[["global", "local"], 12]]) to 24 layers; one pair keeps both kinds in 2
    "gpt_neo": {"attention_types": [[["global", "local"], 1]]},
    # ZAYA's router supports one expert per token only
    "zaya": {"num_experts_per_tok": 1},
}


def run_type(model_type: str, features=FEATURES) -> dict[str, tuple[str, str]]:
    """Every requested cell of one type: ``{feature: (status, detail)}`` (a type that does not build fails all)."""
    from .cells import run_cell

    reason = exclusion(model_type)
    if reason is not None:
        return {f: ("excluded", reason) for f in features}
    try:
        model = build(model_type)
    except Exception as exc:  # noqa: BLE001 - recorded as the cells' failure
        detail = f"the tiny model does not build: {type(exc).__name__}: {str(exc)[:250]}"
        return {f: ("fail", detail) for f in features}
    try:
        with torch.no_grad():
            model(input_ids=text_ids(1, 4), use_cache=False)
    except Exception as exc:  # noqa: BLE001
        text = str(exc)
        # not applicable only where the model itself needs an image (or other non-text) input; any other failure
        # of the tiny model's own forward is the shrinker's (or the family's) failure
        needs_image = any(word in text for word in ("pixel_values", "image_embeds", "missing 1 required", "missing 2 required",
                                                  "shared_kv_states"))
        detail = f"the model's own text-only forward fails: {type(exc).__name__}: {text[:250]}"
        return {f: ("n/a" if needs_image else "fail", detail) for f in features}
    return {f: run_cell(f, model_type, model) for f in features}
