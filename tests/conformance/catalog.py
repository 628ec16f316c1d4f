"""Which model types the conformance suite covers, and each one built tiny.

The denominator is every type of the installed transformers' ``MODEL_FOR_CAUSAL_LM_MAPPING_NAMES`` plus the
image-text-to-text types (``MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES``) whose config reaches a language model
through ``get_text_config()``. Exclusions are decided here, by code, only for what the issue allows: encoder-only
types (a masked-LM architecture, or a base model that is an ``…Encoder``) and encoder-decoder types
(``config.is_encoder_decoder``, a VLM whose text config is one, or a model whose base holds an encoder and a
decoder stack and whose forward takes ``decoder_input_ids``).
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable

import torch

from .shrink import BOS, HEADS, HIDDEN, KV_HEADS, PAD, TEXT_HIGH, TEXT_LOW, VOCAB, shrink_config

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
    return _not_a_language_model(model_type)


def _not_a_language_model(model_type: str) -> str | None:
    """Why the type's class is no language model: it cannot ``generate`` and has no output embeddings (an LM
    head), so its outputs are not token logits (PI0's flow-matching action head); ``None`` where it is one."""
    import transformers
    from transformers import GenerationMixin

    cls = getattr(transformers, model_class_name(model_type))
    if issubclass(cls, GenerationMixin):
        return None
    try:
        with warnings.catch_warnings(), torch.device("meta"):  # structure only: no weights are allocated
            warnings.simplefilter("ignore")
            model = cls(tiny_config(model_type))
    except Exception:  # a type that does not build is the shrinker's failure, recorded by its cells
        return None
    if _encoder_and_decoder(model):
        return (f"encoder-decoder: {cls.__name__} encodes input_ids with an encoder stack and runs its decoder "
                "stack on decoder_input_ids (a block-diffusion LM refining a sampled canvas)")
    if model.get_output_embeddings() is not None:
        return None  # an LM head that does not generate: in the denominator
    return (f"not a language model: {cls.__name__} cannot generate and has no LM head "
            "(get_output_embeddings() is None), so its outputs are not token logits")


def _encoder_and_decoder(model) -> bool:
    """Whether the model's base holds an ``encoder`` and a ``decoder`` module and its forward takes
    ``decoder_input_ids``: an encoder-decoder by structure even where its config does not say
    ``is_encoder_decoder`` (DiffusionGemma)."""
    import inspect

    base = getattr(model, "model", None) or getattr(model, "base_model", model)
    children = dict(base.named_children())
    takes = "decoder_input_ids" in inspect.signature(model.forward).parameters
    return takes and isinstance(children.get("encoder"), torch.nn.Module) and isinstance(
        children.get("decoder"), torch.nn.Module)


def denominator() -> list[str]:
    return [t for t in all_types() if exclusion(t) is None]


def tiny_config(model_type: str):
    """The tiny config of ``model_type``: the generic shrinker plus the type's :data:`OVERRIDES` (and, where timm
    does not import, the type's :data:`VISION_STAND_INS` entry)."""
    configs = _mappings()[-1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        overrides = dict(OVERRIDES.get(model_type, {}))
        base = overrides.pop("default_kwargs", None)  # for a family whose default config does not validate
        default = configs[model_type](**base) if base is not None else None
        config = shrink_config(configs[model_type], default=default, **overrides)
        if stand_in_note(model_type) is not None:
            # past the strict field check: Gemma-3n types its field as its own (timm) vision config class
            object.__setattr__(config, "vision_config", _siglip_tower(config.vision_config, VISION_STAND_INS[model_type]))
        return config


@functools.cache
def _timm_importable() -> bool:
    """Whether ``import timm`` works (it is absent, or installed but failing on its torchvision import)."""
    import importlib

    try:
        importlib.import_module("timm")
    except Exception:  # noqa: BLE001 - ImportError, or torchvision's RuntimeError ("operator torchvision::nms …")
        return False
    return True


def stand_in_note(model_type: str) -> str | None:
    """The note every cell of ``model_type`` carries when its vision tower is a stand-in (``None``: its own)."""
    if model_type not in VISION_STAND_INS or _timm_importable():
        return None
    return ("vision tower: a SigLIP stand-in for the timm tower (timm needs torchvision, which does not import "
            "beside CPU torch 2.13); the text path is the type's own")


def _siglip_tower(own, fields):
    """A tiny SigLIP vision config standing in for the type's own timm tower config ``own`` (already tiny): the
    width is ``own``'s where it states one (else the shrinker's), and ``fields(own, tower)`` gives the fields that
    modules outside the tower read from the vision config, so that the projector and embedders are built as with
    the type's own tower."""
    from transformers import SiglipVisionConfig

    width = getattr(own, "hidden_size", None)
    tower = shrink_config(SiglipVisionConfig, **({"hidden_size": width} if width is not None else {}))
    for name, value in fields(own, tower).items():
        setattr(tower, name, value)
    return tower


@functools.lru_cache(maxsize=1)
def _last_built():
    return {}


def require_type(model_type: str) -> None:
    """Skip the calling test where the installed transformers has no ``model_type`` (the oldest supported release
    predates some types the tests name)."""
    _, _, _, _, configs = _mappings()
    if model_type not in configs:
        import pytest
        import transformers

        pytest.skip(f"transformers {transformers.__version__} has no model type {model_type!r}")


def build(model_type: str, seed: int = 0):
    """The tiny model of ``model_type`` (fp32, CPU, eval), cached per process for the last type asked for.

    Raises whatever the shrinker or the model raises: a type that does not build fails every cell.
    """
    require_type(model_type)
    cache = _last_built()
    if model_type in cache:
        return cache[model_type]
    cache.clear()
    import transformers

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        config = tiny_config(model_type)
        cls = getattr(transformers, model_class_name(model_type))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = cls(config).eval()
            _unzero(model)
    cache[model_type] = model
    return model


def _unzero(model) -> None:
    """Give weight matrices a family's init leaves all-zero small random values (in place, seeded by the caller).

    xLSTM zero-initialises its gate projections, so its MLP output is identically 0 at init: steering, ablating or
    reconstructing that site could not change anything and every check on it would be vacuous. A trained
    checkpoint has no all-zero projection; the family's code is unchanged.
    """
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() >= 2 and param.numel() > 1 and not bool(param.any()):
                param.normal_(0.0, 0.02)


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


def _image_vocabulary() -> dict[str, int]:
    """A Chameleon-style ``vocabulary_map``: ``<image>`` and eight ``IMGIMG…`` tokens at the top of the vocabulary."""
    letters = "ABCDEFGHIJ"
    vocab = {"<image>": VOCAB - 1, "<|extra_200|>": VOCAB - 2}
    for i in range(8):
        vocab[f"IMGIMG{letters[i]}Z"] = VOCAB - 10 + i
    return vocab


_GEMMA3N_TEXT = {"num_hidden_layers": 4, "num_kv_shared_layers": 2,
                 "layer_types": ["sliding_attention", "full_attention"] * 2, "intermediate_size": [2 * HIDDEN] * 4}
_QSA = {"indexer_n_heads": 4, "indexer_kv_heads": 1, "indexer_head_dim": 16, "indexer_budget": 8, "indexer_compress_ratio": 4}

# Per-family overrides of the generic shrinker, each with the reason the generic values do not fit.
OVERRIDES: dict[str, dict] = {
    # Mamba-2 checks hidden_size * expand == num_heads * head_dim: 64 * 2 = 8 heads of 16
    "mamba2": {"num_heads": 8},
    # Jamba interleaves one attention layer every 8 (offset 4) and MoE every 2: with 2 layers there would be no
    # attention layer; period 2 keeps one Mamba and one attention layer (and one MoE block)
    "jamba": {"attn_layer_period": 2, "attn_layer_offset": 1, "expert_layer_period": 2, "expert_layer_offset": 1},
    # GPT-Neo expands attention_types ([[["global", "local"], 12]]) to 24 layers; one pair keeps both kinds in 2
    "gpt_neo": {"attention_types": [[["global", "local"], 1]]},
    # xLSTM's generation cache sizes its mLSTM state from qk_dim rounded up to a multiple of 64, its layers from
    # the unrounded hidden_size * qk_dim_factor (0.5): at width 64 they disagree (32 vs 64) and generate() fails;
    # width 128 keeps the family's factor with both equal (as at checkpoint widths, 4096)
    "xlstm": {"hidden_size": 2 * HIDDEN},
    # Dory splits its stack into input / looped / output sections of 8 / rest / 8 layers (the looped count derived
    # from the depth): at the generic depth 2 the sections overlap (both layers run as input and again as output
    # layers, 8 + (-14) + 8 = 2) and its cache breaks; one input, two looped (both kinds), one output layer
    "dory": {"num_hidden_layers": 4, "n_input_layers": 1, "n_recurrent_layers": 2, "n_output_layers": 1,
             "layer_types": ["sliding_attention", "sliding_attention", "full_attention", "sliding_attention"]},
    # ZAYA's router supports one expert per token only
    "zaya": {"num_experts_per_tok": 1},
    # Chameleon and Emu3 build their image-token vocabulary mapping at init from ``vocabulary_map`` (a Hub
    # checkpoint's tokenizer vocabulary; ``None`` by default): a few image tokens at the top of the tiny vocabulary
    "chameleon": {"vocabulary_map": _image_vocabulary()},
    "emu3": {"vocabulary_map": _image_vocabulary()},
    # Cohere Compass reads one rope entry per layer type and its default config has none
    "cohere_compass": {"text_config": {"rope_parameters": {"full_attention": {"rope_type": "default",
                                                                             "rope_theta": 10000.0}}}},
    "cohere_compass_text": {"rope_parameters": {"full_attention": {"rope_type": "default", "rope_theta": 10000.0}}},
    # DBRX's attention reads ``attn_config.rope_theta``, which the default attention config lacks (checkpoints on
    # the Hub carry it), and clamps q/k/v by ``clip_qkv`` unconditionally (None by default; DBRX checkpoints use 8)
    "dbrx": {"attn_config": {"kv_n_heads": KV_HEADS, "rope_theta": 10000.0, "clip_qkv": 8.0}},
    # DeepSeek-OCR-2's text config leaves the per-layer MLP kinds and the routing width unset (None)
    "deepseek_ocr2": {"text_config": {"mlp_layer_types": ["dense", "sparse"], "num_experts_per_tok": 2}},
    # Dots1 and DiffusionGemma leave their expert counts unset (None) although their layers are MoE
    "dots1": {"n_routed_experts": 4, "num_experts_per_tok": 2, "n_shared_experts": 1},
    "diffusion_gemma": {"text_config": {"num_experts": 4, "top_k_experts": 2, "moe_intermediate_size": HIDDEN // 2}},
    # Gemma-3n's last ``num_kv_shared_layers`` (15) layers reuse an earlier layer's K/V of the same kind: four
    # layers (two producers, two consumers) keep one sharing layer of each kind
    "gemma3n_text": _GEMMA3N_TEXT,
    "gemma3n": {"text_config": _GEMMA3N_TEXT},
    # the assistant's validator refuses Gemma-4 text defaults (per-layer
    # inputs, MoE block, double-wide MLP)
    # (so its own default config does not validate)
    "gemma4_assistant": {"default_kwargs": {"text_config": {
        "model_type": "gemma4_text", "hidden_size_per_layer_input": 0, "vocab_size_per_layer_input": 0,
        "enable_moe_block": False, "use_double_wide_mlp": False}}},
    # Granite-4-Vision's deepstack map (vision layer -> LM layer) and spatial targets name LM layers of the
    # full-size model (up to 21; the map is None by default): point them at the tiny model's two layers
    # (and its Q-Former needs a downsample rate, None by default)
    # Bamba's and Granite-MoE-Hybrid's default configs have no attention layer at all (checkpoints have a few, and
    # transformers' cache cannot build a mask for a stack without one): one Mamba and one attention layer
    "bamba": {"attn_layer_indices": [1]},
    "granitemoehybrid": {"layer_types": ["linear_attention", "full_attention"]},
    # RecurrentGemma repeats (recurrent, recurrent, attention): three layers keep its attention layer
    "recurrent_gemma": {"num_hidden_layers": 3},
    # LFM2-MoE has no default layer layout (None): one conv, one attention, one conv layer; the first dense
    "lfm2_moe": {"num_hidden_layers": 3, "layer_types": ["conv", "full_attention", "conv"], "num_dense_layers": 1},
    # Kolibri's K/V-sharing map (kv_source_layers) and indexer layers are per layer of the full-size model: a
    # three-layer layout where layer 2 reads layer 0's K/V keeps the sharing, the indexer and a sliding layer
    "kolibri1_1": {"num_hidden_layers": 3, "layer_types": ["indexed_attention", "sliding_attention", "indexed_attention"],
                   "index_layers": [0], "kv_source_layers": [0, 1, 0], "index_num_heads": HEADS // KV_HEADS},
    # Zamba ties one shared transformer block across its hybrid layers (layer 2, then every period): five layers with
    # period 2 give the two hybrid layers the tie needs;
    # the block-type list is derived from the period (None). Its attention reads the concatenation of the hidden
    # state and the embeddings: attention width 2 * hidden, head_dim from it
    "zamba": {"num_hidden_layers": 5, "attn_layer_period": 2, "attn_layer_offset": 1, "layers_block_type": None,
              "attention_hidden_size": 2 * HIDDEN, "attention_head_dim": 2 * HIDDEN // HEADS},
    # Qwen4-Exp's indexed-attention layers always build the QSA indexer, whose sizes are None by default (its
    # validator wants all five or none)
    "qwen4_exp_text": _QSA,
    "qwen4_exp": {"text_config": _QSA},
    # Apertus-1.5 places its image and audio codebooks (131072 entries each) contiguously at fixed offsets of the
    # text vocabulary: two codebooks of 16 at offsets 200 and 216 keep the layout inside the tiny vocabulary
    "apertus1p5": {"vision_config": {"codebook_size": 16}, "audio_config": {"codebook_size": 16},
                   "image_token_offset": 200, "audio_token_offset": 216},
    # The Qwen-Omni thinkers' rope-index code (run by generate) reads config.vision_start_token_id, which their config
    # classes do not define (the checkpoints' configs carry it): an id at the top of the tiny vocabulary
    "qwen2_5_omni_thinker": {"vision_start_token_id": VOCAB - 20},
    "qwen3_omni_moe_thinker": {"vision_start_token_id": VOCAB - 20},
    # Molmo2's adapter reads vision layers 24 and 18 of the full-size tower: the tiny tower's two layers
    "molmo2": {"adapter_config": {"vision_feature_layer": [-1, -2]}},
    # Nemotron-H-Omni's validator wants the vision tower's temporal patch equal to the model's (2; None there)
    "nemotron_h_omni": {"vision_config": {"video_temporal_patch_size": 2}},
    # Step-3.7 builds its sliding-window mask on every forward, but its sliding_window is None by default (the
    # checkpoints set it and have sliding layers): a window of 8 and one sliding and one full-attention layer
    "step3p7": {"text_config": {"sliding_window": 8, "layer_types": ["sliding_attention", "full_attention"]}},
    "granite4_vision": {"deepstack_layer_map": [[-1, 0]], "spatial_target_layers": [0, 1, 0, 1],
                        "downsample_rate": "1/2"},
}


# Types whose vision tower is a TimmWrapperModel, which needs timm, which needs torchvision: no torchvision wheel
# imports beside the CPU torch 2.13 the project pins ("operator torchvision::nms does not exist"), so these types could
# not be built at all. hf_ext's features act on the text path only (text-only inputs: the vision tower never runs),
# so where timm does not import the tower is a transformers-native SigLIP of the same width, with the fields the rest
# of the model reads from the vision config kept (a stand-in used only then: with timm the type's own tower is built).
VISION_STAND_INS: dict[str, Callable] = {
    # the projector's input width is vision_config.hidden_size (the stand-in's)
    "fast_vlm": lambda own, tower: {},
    # the vision-token embedder (run on text too: it embeds the ids of its vocabulary range) reads the tower's
    # width (the stand-in has own's), vocabulary offset and size and norm eps
    "gemma3n": lambda own, tower: {k: getattr(own, k) for k in ("vocab_offset", "vocab_size", "rms_norm_eps")},
    # the projector's input width is vision_config.model_args["embed_dim"] (timm's own argument): the stand-in's
    "perception_lm": lambda own, tower: {"model_args": {"embed_dim": tower.hidden_size}},
}


def run_type(model_type: str, features=FEATURES) -> dict[str, tuple[str, str]]:
    """Every requested cell of one type: ``{feature: (status, detail)}`` (a type that does not build fails all;
    a type built with a stand-in vision tower says so in every cell)."""
    cells = _run_type(model_type, features)
    note = stand_in_note(model_type)
    if note is None or exclusion(model_type) is not None:
        return cells
    return {f: (status, f"{detail} [{note}]" if detail else note) for f, (status, detail) in cells.items()}


def _run_type(model_type: str, features) -> dict[str, tuple[str, str]]:
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
        inner = wrapped_language_model(model) if needs_image else None
        if inner is None:
            return {f: ("n/a" if needs_image else "fail", detail) for f in features}
        # the features apply to the causal LM the VLM wraps (what a user hands hf_ext for text): checked on it
        name, model = inner
        cells = {f: run_cell(f, model_type, model) for f in features}
        note = f"checked on the wrapped causal LM `{name}` ({type(model).__name__}): {detail[:120]}"
        return {f: (status, f"{detail} [{note}]" if detail else note) for f, (status, detail) in cells.items()}
    return {f: run_cell(f, model_type, model) for f in features}


def wrapped_language_model(model):
    """``(name, module)`` of the causal LM a VLM wraps whose own text-only forward runs, else ``None``.

    Found by structure, not by name: a direct child (or grandchild) that is a transformers model able to
    ``generate``, with an LM head (``get_output_embeddings()``), configured by the VLM's text config (BLIP-2's
    OPT ``language_model``, Kosmos-2's ``text_model``, BLIP's ``text_decoder``). A VLM whose language layers
    read the image themselves (IDEFICS' gated cross-attention) has no such child.
    """
    from transformers import GenerationMixin, PreTrainedModel

    text = model.config.get_text_config(decoder=True)
    for name, child in model.named_modules():
        if not name or name.count(".") > 1 or not isinstance(child, (PreTrainedModel, GenerationMixin)):
            continue
        if not (isinstance(child, GenerationMixin) and isinstance(child, PreTrainedModel)):
            continue
        if child.config is not text and child.config.to_dict() != text.to_dict():
            continue
        if child.get_output_embeddings() is None:
            continue
        try:
            with torch.no_grad():
                child(input_ids=text_ids(1, 4), use_cache=False)
        except Exception:  # noqa: BLE001 - a child that cannot run on text alone is no text model
            continue
        return name, child
    return None
