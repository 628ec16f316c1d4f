"""Seeded tiny models built from configs in code: the models of the CLIs' ``--tiny`` demos, the tour, the toy
experiments and benchmarks (tests and notebooks reach them through :mod:`hf_ext.testing`).

Every factory takes a ``seed`` and returns the same weights for the same seed (fp32, CPU, ``eval()`` mode).
Nothing is downloaded: configs are written here and weights are random.

Example:
    >>> from hf_ext.tiny import tiny_causal_lm, tiny_tokenizer
    >>> model = tiny_causal_lm("llama")
    >>> tok = tiny_tokenizer()
    >>> ids = tok("hello", return_tensors="pt").input_ids
    >>> model(ids).logits.shape[-1] == model.config.vocab_size
    True
"""

from __future__ import annotations

import string
from typing import TYPE_CHECKING, Any

import torch

from hf_ext.utils.validation import check_int, check_size

if TYPE_CHECKING:
    from transformers import (
        CLIPTokenizer,
        LlavaForConditionalGeneration,
        LlavaProcessor,
        PreTrainedConfig,
        PreTrainedModel,
        PreTrainedTokenizerFast,
    )

__all__ = [
    "BOS_ID",
    "CAUSAL_LM_FAMILIES",
    "CLIP_BOS_ID",
    "CLIP_EOS_ID",
    "CLIP_MAX_POSITIONS",
    "EOS_ID",
    "LLAVA_IMAGE_TOKEN_ID",
    "PAD_ID",
    "TINY_VOCAB_SIZE",
    "UNK_ID",
    "tiny_causal_lm",
    "tiny_causal_lm_config",
    "tiny_clip_tokenizer",
    "tiny_clip_vocab",
    "tiny_llava",
    "tiny_llava_inputs",
    "tiny_sd_components",
    "tiny_sdxl_components",
    "tiny_tokenizer",
]

#: The causal-LM families every "any model" claim of the core is tested on.
CAUSAL_LM_FAMILIES: tuple[str, ...] = ("llama", "gpt2", "gpt_neox", "qwen2", "opt")

# Character vocabulary of :func:`tiny_tokenizer`: specials first, then printable ASCII.
_SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]
_CHARS = [c for c in string.printable if c not in "\x0b\x0c"]
TINY_VOCAB_SIZE = 128
PAD_ID, BOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3


def tiny_causal_lm_config(family: str, *, hidden_size: int = 64, num_layers: int = 2,
                          **overrides: Any) -> PreTrainedConfig:
    """Config of a tiny causal LM of ``family`` (one of :data:`CAUSAL_LM_FAMILIES`).

    Args:
        family: model family (transformers ``model_type``).
        hidden_size: width; 4 attention heads (2 KV heads where the family has GQA).
        num_layers: decoder layers.
        **overrides: extra config fields (e.g. ``vocab_size``).

    Returns:
        A ``transformers.PreTrainedConfig`` with vocab 128 and 128 positions, specials as in :func:`tiny_tokenizer`.
    """
    import transformers as tf

    common = dict(vocab_size=TINY_VOCAB_SIZE, bos_token_id=BOS_ID, eos_token_id=EOS_ID, pad_token_id=PAD_ID,
                  tie_word_embeddings=False)
    if family == "llama":
        cfg = tf.LlamaConfig(hidden_size=hidden_size, intermediate_size=2 * hidden_size, num_hidden_layers=num_layers,
                             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128, **common)
    elif family == "qwen2":
        cfg = tf.Qwen2Config(hidden_size=hidden_size, intermediate_size=2 * hidden_size, num_hidden_layers=num_layers,
                             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128, **common)
    elif family == "gpt2":
        cfg = tf.GPT2Config(n_embd=hidden_size, n_layer=num_layers, n_head=4, n_positions=128,
                            attn_pdrop=0.0, embd_pdrop=0.0, resid_pdrop=0.0, **common)
    elif family == "gpt_neox":
        cfg = tf.GPTNeoXConfig(hidden_size=hidden_size, intermediate_size=2 * hidden_size, num_hidden_layers=num_layers,
                               num_attention_heads=4, max_position_embeddings=128, rotary_pct=0.5, **common)
    elif family == "opt":
        cfg = tf.OPTConfig(hidden_size=hidden_size, ffn_dim=2 * hidden_size, num_hidden_layers=num_layers,
                           num_attention_heads=4, max_position_embeddings=128, word_embed_proj_dim=hidden_size,
                           dropout=0.0, attention_dropout=0.0, **common)
    else:
        raise ValueError(f"unknown tiny family {family!r}; choose one of {CAUSAL_LM_FAMILIES}")
    for key, value in overrides.items():
        setattr(cfg, key, value)
    return cfg


def tiny_causal_lm(family: str = "llama", *, seed: int = 0, attn_implementation: str | None = None,
                   **config_kwargs: Any) -> PreTrainedModel:
    """A seeded tiny ``AutoModelForCausalLM`` of ``family`` in eval mode (fp32, CPU).

    Args:
        family: one of :data:`CAUSAL_LM_FAMILIES`.
        seed: weights are a deterministic function of the seed.
        attn_implementation: ``"sdpa"`` (transformers' default) or ``"eager"``.
        **config_kwargs: forwarded to :func:`tiny_causal_lm_config`.
    """
    from transformers import AutoModelForCausalLM

    cfg = tiny_causal_lm_config(family, **config_kwargs)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        kwargs = {"attn_implementation": attn_implementation} if attn_implementation else {}
        model = AutoModelForCausalLM.from_config(cfg, **kwargs)
    return model.eval()


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A character-level fast tokenizer over printable ASCII (vocab < 128, specials ``<pad> <s> </s> <unk>``).

    It returns offset mappings, pads on the left by default (the decoder-only convention for batched
    generation) and prepends ``<s>``. Built from a generated vocab: nothing is downloaded.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(_SPECIALS + _CHARS)}
    assert len(vocab) <= TINY_VOCAB_SIZE
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    backend.decoder = decoders.Fuse()
    backend.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", BOS_ID)])
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                  pad_token="<pad>", padding_side="left")
    return tok


# ---------------------------------------------------------------------------------------------------------------
# Tiny CLIP tokenizer, Stable Diffusion (1.x / XL) components and Llava
# ---------------------------------------------------------------------------------------------------------------

#: Special-token ids of :func:`tiny_clip_tokenizer` (``<|endoftext|>`` doubles as pad and unk, as in CLIP).
CLIP_BOS_ID, CLIP_EOS_ID = 0, 1
#: Position embeddings of the tiny CLIP text encoders: the largest ``max_length`` they accept.
CLIP_MAX_POSITIONS = 77
# A handful of BPE merges so that "a photo of a cat" is five word tokens; every other word falls back to bytes.
_CLIP_MERGES: tuple[tuple[str, str], ...] = (
    ("t", "h"), ("th", "e</w>"), ("a", "t</w>"), ("c", "at</w>"), ("o", "f</w>"),
    ("p", "h"), ("ph", "o"), ("pho", "t"), ("phot", "o</w>"), ("o", "g</w>"), ("d", "og</w>"),
)
#: Text id of the ``<image>`` placeholder of :func:`tiny_llava`: the first id after :func:`tiny_tokenizer`'s vocab.
LLAVA_IMAGE_TOKEN_ID = len(_SPECIALS) + len(_CHARS)
_LLAVA_STRATEGIES = ("default", "full")


def _check_seed(seed: Any) -> int:
    return check_int("seed", seed)


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP byte -> printable-unicode map (the alphabet of the ``ByteLevel`` pre-tokenizer), in byte order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, extra = {b: chr(b) for b in printable}, 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return dict(sorted(table.items()))


def tiny_clip_vocab() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """The generated BPE vocab and merges of :func:`tiny_clip_tokenizer`.

    Returns:
        ``(vocab, merges)``: ``<|startoftext|>`` = 0, ``<|endoftext|>`` = 1, then the 256 byte-level characters,
        their 256 ``</w>`` (end-of-word) variants and one token per merge (523 entries in all).

    Example:
        >>> vocab, merges = tiny_clip_vocab()
        >>> vocab["<|endoftext|>"], vocab["cat</w>"] > 513, ("c", "at</w>") in merges
        (1, True, True)
    """
    chars = list(_bytes_to_unicode().values())
    tokens = ["<|startoftext|>", "<|endoftext|>", *chars, *(c + "</w>" for c in chars), *(a + b for a, b in _CLIP_MERGES)]
    vocab = {tok: i for i, tok in enumerate(tokens)}
    assert len(vocab) == len(tokens) <= 1000
    return vocab, list(_CLIP_MERGES)


def tiny_clip_tokenizer(max_length: int = 16) -> CLIPTokenizer:
    """A tiny offline ``CLIPTokenizer`` (byte-level BPE, lower-casing, vocab 523) that diffusers pipelines accept.

    In transformers 5 ``CLIPTokenizer`` is a tokenizers-backed class that takes ``vocab``/``merges`` directly, so
    no files are written. ``encode`` gives ``[bos] tokens [eos]``; ``<|endoftext|>`` is also the pad token, and
    ``padding="max_length"`` pads to ``max_length`` as Stable Diffusion pipelines do.

    Args:
        max_length: ``model_max_length``, between 2 (bos + eos) and :data:`CLIP_MAX_POSITIONS`.

    Example:
        >>> tok = tiny_clip_tokenizer(max_length=8)
        >>> tok("a photo of a cat", padding="max_length").input_ids
        [0, 355, 522, 518, 355, 517, 1, 1]
    """
    from transformers import CLIPTokenizer

    check_size("max_length", max_length, max=1_000_000)
    if not 2 <= max_length <= CLIP_MAX_POSITIONS:
        raise ValueError(f"max_length must be in [2, {CLIP_MAX_POSITIONS}] (bos + eos fit, and the tiny text "
                         f"encoders have {CLIP_MAX_POSITIONS} positions), got {max_length}")
    vocab, merges = tiny_clip_vocab()
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=max_length)


def _tiny_clip_text_config(vocab_size: int, **overrides: Any):
    from transformers import CLIPTextConfig

    kwargs = dict(vocab_size=vocab_size, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                  num_attention_heads=4, max_position_embeddings=CLIP_MAX_POSITIONS, layer_norm_eps=1e-5,
                  hidden_act="gelu", projection_dim=32, bos_token_id=CLIP_BOS_ID, eos_token_id=CLIP_EOS_ID,
                  pad_token_id=CLIP_EOS_ID)
    kwargs.update(overrides)
    return CLIPTextConfig(**kwargs)


def _seeded(seed: int, build):
    """``build()`` under a forked RNG seeded with ``seed``; returns the module in eval mode."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = build()
    return module.eval()


def _tiny_vae(seed: int):
    diffusers = _require_diffusers()
    return _seeded(seed, lambda: diffusers.AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(32, 64), layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2, sample_size=32))


def _tiny_ddim():
    diffusers = _require_diffusers()
    return diffusers.DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                   clip_sample=False, set_alpha_to_one=False, steps_offset=1)


def _require_diffusers():
    """``import diffusers`` or raise an ``ImportError`` naming the ``hf-ext[diffusion]`` extra."""
    from hf_ext.utils.imports import require

    return require("diffusers")


def tiny_sd_components(seed: int = 0, *, max_length: int = 16) -> dict[str, Any]:
    """Seeded tiny Stable Diffusion 1.x components for ``diffusers.StableDiffusionPipeline`` (fp32, eval, offline).

    * ``unet``: ``UNet2DConditionModel``, channels (32, 64), 1 layer per block, cross-attention width 32,
      ``sample_size=16`` (latents 4×16×16);
    * ``vae``: ``AutoencoderKL``, channels (32, 64), scale factor 2, so the default image is 3×32×32;
    * ``text_encoder``: ``CLIPTextModel`` (hidden 32, 2 layers) over :func:`tiny_clip_tokenizer`'s vocab;
    * ``tokenizer``: :func:`tiny_clip_tokenizer` (``max_length``);
    * ``scheduler``: ``DDIMScheduler`` with SD 1.x betas (scaled linear 0.00085–0.012);
    * ``safety_checker``, ``feature_extractor``, ``image_encoder``: ``None``.

    Args:
        seed: every module's weights are a deterministic function of the seed.
        max_length: prompt length of the tokenizer (the pipeline pads prompts to it).

    Example:
        >>> from diffusers import StableDiffusionPipeline
        >>> pipe = StableDiffusionPipeline(**tiny_sd_components(), requires_safety_checker=False)
        >>> g = torch.Generator().manual_seed(0)
        >>> pipe("a cat", num_inference_steps=2, generator=g, output_type="np").images.shape
        (1, 32, 32, 3)
    """
    diffusers = _require_diffusers()
    from transformers import CLIPTextModel

    seed = _check_seed(seed)
    tokenizer = tiny_clip_tokenizer(max_length)
    unet = _seeded(seed, lambda: diffusers.UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, block_out_channels=(32, 64), layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32, attention_head_dim=8))
    text_encoder = _seeded(seed, lambda: CLIPTextModel(_tiny_clip_text_config(len(tokenizer))))
    return dict(unet=unet, vae=_tiny_vae(seed), text_encoder=text_encoder, tokenizer=tokenizer, scheduler=_tiny_ddim(),
                safety_checker=None, feature_extractor=None, image_encoder=None)


def tiny_sdxl_components(seed: int = 0, *, max_length: int = 16) -> dict[str, Any]:
    """Seeded tiny SDXL components for ``diffusers.StableDiffusionXLPipeline`` (fp32, eval, offline).

    * ``text_encoder``: ``CLIPTextModel`` (hidden 32) and ``text_encoder_2``: ``CLIPTextModelWithProjection``
      (hidden 32, ``projection_dim`` 32); the pipeline concatenates their penultimate hidden states, so the
      UNet's cross-attention width is 64;
    * ``unet``: ``UNet2DConditionModel`` with ``addition_embed_type="text_time"``, ``addition_time_embed_dim=8``
      and ``projection_class_embeddings_input_dim = 6 * 8 + 32`` (six micro-conditioning numbers + the pooled
      projection of ``text_encoder_2``), ``sample_size=16``;
    * ``vae``, ``scheduler``: as in :func:`tiny_sd_components` (default image 3×32×32);
    * ``tokenizer``, ``tokenizer_2``: two :func:`tiny_clip_tokenizer` instances;
    * ``image_encoder``, ``feature_extractor``: ``None``.

    Args:
        seed: every module's weights are a deterministic function of the seed.
        max_length: prompt length of both tokenizers.

    Example:
        >>> from diffusers import StableDiffusionXLPipeline
        >>> pipe = StableDiffusionXLPipeline(**tiny_sdxl_components())
        >>> g = torch.Generator().manual_seed(0)
        >>> pipe("a cat", num_inference_steps=2, generator=g, output_type="np").images.shape
        (1, 32, 32, 3)
    """
    diffusers = _require_diffusers()
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    seed = _check_seed(seed)
    tokenizer, tokenizer_2 = tiny_clip_tokenizer(max_length), tiny_clip_tokenizer(max_length)
    text_config = _tiny_clip_text_config(len(tokenizer))
    time_embed_dim = 8
    unet = _seeded(seed, lambda: diffusers.UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, block_out_channels=(32, 64), layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4), use_linear_projection=True, transformer_layers_per_block=1,
        cross_attention_dim=text_config.hidden_size * 2, addition_embed_type="text_time",
        addition_time_embed_dim=time_embed_dim,
        projection_class_embeddings_input_dim=6 * time_embed_dim + text_config.projection_dim))
    text_encoder = _seeded(seed, lambda: CLIPTextModel(text_config))
    text_encoder_2 = _seeded(seed + 1, lambda: CLIPTextModelWithProjection(text_config))
    return dict(unet=unet, vae=_tiny_vae(seed), text_encoder=text_encoder, text_encoder_2=text_encoder_2,
                tokenizer=tokenizer, tokenizer_2=tokenizer_2, scheduler=_tiny_ddim(), image_encoder=None,
                feature_extractor=None)


def tiny_llava(seed: int = 0, *, vision_feature_select_strategy: str = "default", with_processor: bool = True,
               ) -> tuple[LlavaForConditionalGeneration, LlavaProcessor | None]:
    """A seeded tiny ``LlavaForConditionalGeneration`` (fp32, eval) and, optionally, its ``LlavaProcessor``.

    * vision tower: ``CLIPVisionConfig`` hidden 32, 2 layers, 4 heads, ``image_size=32``, ``patch_size=8``
      (16 patches + CLS; features from layer -2);
    * language model: :func:`tiny_causal_lm_config` ``("llama")`` (vocab 128, hidden 64, 2 layers), so
      ``model.config.get_text_config()`` is that ``LlamaConfig``;
    * ``image_token_id`` = :data:`LLAVA_IMAGE_TOKEN_ID` (102, ``<image>``): each image takes 16 placeholder tokens
      with ``vision_feature_select_strategy="default"`` (CLS dropped) and 17 with ``"full"``.

    The processor pairs :func:`tiny_tokenizer` plus the ``<image>`` token with a PIL ``CLIPImageProcessorPil``
    (resize/crop to 32×32), and expands each ``<image>`` in the text to the right number of placeholders.

    Args:
        seed: weights are a deterministic function of the seed.
        vision_feature_select_strategy: ``"default"`` or ``"full"``.
        with_processor: build the processor too (else ``None`` is returned in its place).

    Returns:
        ``(model, processor_or_None)``.

    Example:
        >>> model, processor = tiny_llava()
        >>> inputs = tiny_llava_inputs(model, batch=2, text_len=5)
        >>> model(**inputs).logits.shape
        torch.Size([2, 22, 128])
    """
    from transformers import CLIPVisionConfig, LlavaConfig, LlavaForConditionalGeneration

    seed = _check_seed(seed)
    if vision_feature_select_strategy not in _LLAVA_STRATEGIES:
        raise ValueError(f"unknown vision_feature_select_strategy {vision_feature_select_strategy!r}; "
                         f"choose one of {_LLAVA_STRATEGIES}")
    image_size, patch_size = 32, 8
    vision_config = CLIPVisionConfig(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                                     image_size=image_size, patch_size=patch_size, projection_dim=32)
    n_image_tokens = (image_size // patch_size) ** 2 + (vision_feature_select_strategy == "full")
    config = LlavaConfig(vision_config=vision_config, text_config=tiny_causal_lm_config("llama"),
                         image_token_id=LLAVA_IMAGE_TOKEN_ID, image_seq_length=n_image_tokens,
                         vision_feature_select_strategy=vision_feature_select_strategy, vision_feature_layer=-2,
                         bos_token_id=BOS_ID, eos_token_id=EOS_ID, pad_token_id=PAD_ID)
    model = _seeded(seed, lambda: LlavaForConditionalGeneration(config))
    processor = _tiny_llava_processor(image_size, patch_size, vision_feature_select_strategy) if with_processor else None
    return model, processor


def _tiny_llava_processor(image_size: int, patch_size: int, strategy: str):
    from transformers import CLIPImageProcessorPil, LlavaProcessor

    tokenizer = tiny_tokenizer()
    tokenizer.add_tokens(["<image>"], special_tokens=True)
    assert tokenizer.convert_tokens_to_ids("<image>") == LLAVA_IMAGE_TOKEN_ID
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": image_size},
                                            crop_size={"height": image_size, "width": image_size})
    return LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=patch_size,
                          vision_feature_select_strategy=strategy, image_token="<image>", num_additional_image_tokens=1)


def tiny_llava_inputs(model: LlavaForConditionalGeneration, batch: int = 2, text_len: int = 5, seed: int = 0) -> dict[str, torch.Tensor]:
    """Ready-to-use inputs for a (tiny) Llava model: ``<s>``, the image placeholders, then random text.

    Args:
        model: a ``LlavaForConditionalGeneration`` (e.g. from :func:`tiny_llava`); its config gives the image
            size, the image token and how many placeholders one image takes.
        batch: number of rows (one image each).
        text_len: random text tokens after the image (ids of :func:`tiny_tokenizer`'s characters).
        seed: seeds the text ids and the pixels (a local ``torch.Generator``; the global RNG is untouched).

    Returns:
        ``{"input_ids": (batch, 1 + n_img + text_len) long, "attention_mask": same shape, all ones,
        "pixel_values": (batch, 3, image_size, image_size) float32}``.

    Example:
        >>> model, _ = tiny_llava(with_processor=False)
        >>> {k: tuple(v.shape) for k, v in tiny_llava_inputs(model, batch=1, text_len=2).items()}
        {'input_ids': (1, 19), 'attention_mask': (1, 19), 'pixel_values': (1, 3, 32, 32)}
    """
    config = getattr(model, "config", None)
    if getattr(config, "model_type", None) != "llava":
        raise TypeError(f"tiny_llava_inputs needs a Llava model, got {type(model).__name__}")
    for name, value, low in (("batch", batch, 1), ("text_len", text_len, 0)):
        check_size(name, value, min=low)
    seed = _check_seed(seed)
    vision = config.vision_config
    n_image_tokens = (vision.image_size // vision.patch_size) ** 2 + (config.vision_feature_select_strategy == "full")
    gen = torch.Generator().manual_seed(seed)
    text = torch.randint(len(_SPECIALS), len(_SPECIALS) + len(_CHARS), (batch, text_len), generator=gen)
    input_ids = torch.cat([torch.full((batch, 1), BOS_ID), torch.full((batch, n_image_tokens), config.image_token_id),
                           text], dim=1)
    pixel_values = torch.randn(batch, vision.num_channels, vision.image_size, vision.image_size, generator=gen)
    return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "pixel_values": pixel_values}
