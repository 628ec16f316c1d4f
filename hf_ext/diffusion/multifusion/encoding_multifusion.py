"""Interleaved multimodal prompt encoding for MultiFusion / M-VADER.

A prompt is a list of items in any order and number: ``str`` (text in any language the LM knows) or
``PIL.Image.Image``, optionally paired with a weight, ``(item, weight)``. It is laid out as one causal sequence
``[BOS] item_1 item_2 …`` (text items tokenized separately, each image taking ``N`` slots), run through

* (a) a Llava-style VLM (``LlavaForConditionalGeneration`` and relatives exposing ``get_image_features`` and an
  ``image_token_id``): image slots are the model's placeholder tokens, the model scatters its image features there;
* (b) a :class:`~.modeling_multifusion.MagmaEncoder` (any causal LM + MAGMA image prefix + adapters);
* (c) a plain causal LM (text items only),

and the hidden states of a selectable layer are the conditioning sequence ``[B, L, d_lm]`` with a padding mask
(rows are right-padded). Per-item weights act **inside the language model's attention** through
:func:`hf_ext.core.attention.attention_controls` (log-additive by default: the key columns of item ``j`` get
``+log w_j`` in every layer; the vision tower is never touched). Weights of 1 reproduce the unweighted encoder.

Example:
    >>> from PIL import Image
    >>> from hf_ext.testing import tiny_llava
    >>> model, processor = tiny_llava()
    >>> enc = InterleavedEncoder(model, processor.tokenizer, processor.image_processor)
    >>> img = Image.new("RGB", (32, 32), (255, 0, 0))
    >>> out = enc([img, "a green apple"], weights=[1.0, 20.0])
    >>> out.hidden_states.shape  # 1 BOS + 16 image tokens + 13 characters
    torch.Size([1, 30, 64])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Union

import torch

from hf_ext.core.attention import MODES, attention_controls
from hf_ext.core.inputs import max_positions, takes_mask_positions
from hf_ext.utils.validation import check_float, check_int

if TYPE_CHECKING:
    import PIL.Image
    from transformers import PreTrainedModel, PreTrainedTokenizerBase
    from transformers.image_processing_utils import BaseImageProcessor

    from .modeling_multifusion import MagmaEncoder

# (typing.Union: the PIL class is a forward reference, pillow being optional here)
#: One prompt item: a text or an image, optionally ``(item, weight)``.
PromptItem = Union[str, "PIL.Image.Image", tuple[Union[str, "PIL.Image.Image"], float]]  # noqa: UP007
#: One prompt (an item or a list of items) or a batch of prompts (a list of item lists).
Prompt = Union[PromptItem, Sequence[PromptItem], Sequence[Sequence[PromptItem]]]  # noqa: UP007
#: One weight per item of one prompt, or one such list per prompt of a batch.
PromptWeights = Sequence[float] | Sequence[Sequence[float]]

__all__ = ["EncodedPrompt", "InterleavedEncoder", "normalize_prompts"]


def _is_image(item: Any) -> bool:
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - pillow comes with transformers' vision extras
        return False
    return isinstance(item, Image.Image)


def _is_item(item: Any) -> bool:
    return isinstance(item, str) or _is_image(item) or (
        isinstance(item, tuple) and len(item) == 2 and (isinstance(item[0], str) or _is_image(item[0])))


def normalize_prompts(prompt: Prompt, weights: PromptWeights | None = None) -> tuple[list[list[Any]], list[list[float]] | None]:
    """Normalise a prompt (or a batch of prompts) and its weights to ``(rows of items, rows of weights | None)``.

    Accepted forms: ``"text"``, an image, ``[item, …]`` (one prompt), ``[[item, …], …]`` (a batch); items may be
    ``(item, weight)`` tuples. ``weights`` is ``[w_1, …]`` for one prompt or one such list per prompt.

    Raises:
        ValueError: empty prompt list, an empty prompt, weights of the wrong length or negative/non-finite weights.
        TypeError: an item that is neither ``str`` nor ``PIL.Image.Image``.

    Example:
        >>> normalize_prompts(["a", ("b", 2.0)])
        ([['a', 'b']], [[1.0, 2.0]])
    """
    if isinstance(prompt, str) or _is_image(prompt):
        rows = [[prompt]]
    elif isinstance(prompt, (list, tuple)):
        if len(prompt) == 0:
            raise ValueError("the prompt list is empty: give at least one item (a str or a PIL image)")
        if all(isinstance(p, list) for p in prompt):
            rows = [list(p) for p in prompt]
        elif isinstance(prompt, tuple) and _is_item(prompt) and not isinstance(prompt[1], (str,)) and not _is_image(prompt[1]):
            rows = [[prompt]]
        else:
            rows = [list(prompt)]
    else:
        raise TypeError(f"prompt must be a str, a PIL image, a list of items or a list of such lists, got "
                        f"{type(prompt).__name__}")
    items_rows, tuple_weights, any_tuple = [], [], False
    for r, row in enumerate(rows):
        if len(row) == 0:
            raise ValueError(f"prompt {r} has no items: give at least one str or PIL image")
        items, ws = [], []
        for i, item in enumerate(row):
            w = 1.0
            if isinstance(item, tuple):
                if len(item) != 2:
                    raise TypeError(f"prompt {r} item {i}: a weighted item is (item, weight), got a tuple of {len(item)}")
                item, w = item
                any_tuple = True
            if not (isinstance(item, str) or _is_image(item)):
                raise TypeError(f"prompt {r} item {i} has unsupported type {type(item).__name__}; items must be str or "
                                "PIL.Image.Image (convert arrays with PIL.Image.fromarray)")
            items.append(item)
            ws.append(w)
        items_rows.append(items)
        tuple_weights.append(ws)
    if weights is not None and any_tuple:
        raise ValueError("give weights either as (item, weight) tuples or through weights=, not both")
    if weights is None:
        weights = tuple_weights if any_tuple else None
    elif len(items_rows) == 1 and len(weights) > 0 and not isinstance(weights[0], (list, tuple)):
        weights = [list(weights)]
    if weights is not None:
        weights = [list(w) for w in weights]
        if len(weights) != len(items_rows):
            raise ValueError(f"got weights for {len(weights)} prompts but there are {len(items_rows)} prompts")
        for r, (ws, items) in enumerate(zip(weights, items_rows)):
            if len(ws) != len(items):
                raise ValueError(f"prompt {r} has {len(items)} items but {len(ws)} weights; give one weight per item")
            for i, w in enumerate(ws):
                # 1 = unchanged, 0 removes the item from attention
                check_float(f"weights[{r}][{i}]", w, min=0)
        weights = [[float(w) for w in ws] for ws in weights]
    return items_rows, weights


@dataclass
class EncodedPrompt:
    """Encoder output of a batch of interleaved prompts.

    Attributes:
        hidden_states: ``[B, L, d_lm]`` hidden states of the selected layer (right-padded rows).
        attention_mask: ``[B, L]`` long, 1 for real tokens, 0 for padding (the UNet's ``encoder_attention_mask``).
        item_spans: per row, per item, the ``(start, end)`` key positions of that item (BOS sits at 0 if any).
        item_kinds: per row, per item, ``"text"`` or ``"image"``.
        weights: per row, per item weights used in the encoder (``None`` = unweighted).
    """

    hidden_states: torch.Tensor
    attention_mask: torch.Tensor
    item_spans: list[list[tuple[int, int]]] = field(default_factory=list)
    item_kinds: list[list[str]] = field(default_factory=list)
    weights: list[list[float]] | None = None

    def key_weights(self, weights: list[list[float]] | None = None) -> torch.Tensor:
        """``[B, L]`` per-key weights: ``weights[b][j]`` on the keys of item ``j`` (default: :attr:`weights`), else 1."""
        return _key_weights(self.item_spans, self.weights if weights is None else weights, self.attention_mask.shape[1])

    def pooled(self) -> torch.Tensor:
        """``[B, d_lm]`` mean over real (non-padding) tokens: the semantic embedding of S-MAGMA-style search."""
        mask = self.attention_mask.unsqueeze(-1).to(self.hidden_states.dtype)
        return (self.hidden_states * mask).sum(1) / mask.sum(1).clamp_min(1)


def _key_weights(spans, weights, length: int) -> torch.Tensor:
    out = torch.ones(len(spans), length)
    if weights is None:
        return out
    for b, (row_spans, row_w) in enumerate(zip(spans, weights)):
        for (start, end), w in zip(row_spans, row_w):
            out[b, start:end] = w
    return out


@dataclass
class _Layout:
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    image_mask: torch.Tensor
    images: list
    spans: list
    kinds: list


class InterleavedEncoder:
    """Encode interleaved ``str | PIL.Image`` prompts with a VLM, a :class:`MagmaEncoder` or a causal LM.

    Args:
        model: ``LlavaForConditionalGeneration``-style VLM, :class:`~.modeling_multifusion.MagmaEncoder`, or any
            transformers causal LM / bare decoder (text only). It must run with ``sdpa`` or ``eager`` attention for
            weighting.
        tokenizer: the LM's tokenizer (text items are tokenized one by one, without special tokens; the tokenizer's
            BOS, if any, starts every row).
        image_processor: turns PIL images into ``pixel_values`` (needed for image items).
        layer: index into the LM's ``hidden_states`` tuple (embeddings + one entry per layer); ``-1`` (default) is
            the last layer after the final norm.
        weight_mode: ``"log_additive"`` (default; AtMan's production form) or ``"multiplicative"``.

    Raises (on call):
        ValueError / TypeError from :func:`normalize_prompts`; ``ValueError`` for an image item when the model has no
        image encoder, no ``image_processor`` was given, or the VLM's config names no ``image_token_id`` (text
        items of such a VLM are encoded as usual).
    """

    def __init__(self, model: PreTrainedModel | MagmaEncoder, tokenizer: PreTrainedTokenizerBase,
                 image_processor: BaseImageProcessor | None = None, *, layer: int = -1, weight_mode: str = "log_additive"):
        from .modeling_multifusion import MagmaEncoder

        if weight_mode not in MODES:
            raise ValueError(f"weight_mode={weight_mode!r} is not one of {MODES}")
        if tokenizer is None:
            raise ValueError("an InterleavedEncoder needs the language model's tokenizer")
        self.model, self.tokenizer, self.image_processor = model, tokenizer, image_processor
        self.weight_mode = weight_mode
        if isinstance(model, MagmaEncoder):
            self.kind = "magma"
            self.lm = model.language_model
            self.image_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        elif hasattr(model, "get_image_features") or hasattr(getattr(model, "model", None), "get_image_features"):
            self.kind = "vlm"
            self.lm = model
            cfg = model.config
            # a VLM whose config names no placeholder id still encodes text items; image items are refused then
            self.image_token_id = getattr(cfg, "image_token_id", getattr(cfg, "image_token_index", None))
        else:
            self.kind = "text"
            self.lm = model
            self.image_token_id = None
        text_cfg = self.lm.config.get_text_config() if hasattr(self.lm.config, "get_text_config") else self.lm.config
        self.num_layers = text_cfg.num_hidden_layers
        self.hidden_size = text_cfg.hidden_size
        self.max_positions = max_positions(self.lm)  # None where the config sets no limit (XLNet's -1)
        self.layer = self._check_layer(layer)

    # ------------------------------------------------------------------------------------------------ helpers
    def _check_layer(self, layer) -> int:
        n = self.num_layers + 1
        # n hidden states: the embeddings and one per layer
        check_int("layer", layer, min=-n, max=n - 1)
        return layer

    @property
    def num_image_tokens(self) -> int:
        """Sequence slots one image takes."""
        if self.kind == "magma":
            return self.model.num_image_tokens
        if self.kind == "vlm":
            cfg = self.model.config
            n = getattr(cfg, "image_seq_length", None)
            if n:
                return int(n)
            v = cfg.vision_config
            return (v.image_size // v.patch_size) ** 2 + (getattr(cfg, "vision_feature_select_strategy", "default") == "full")
        raise ValueError(f"{type(self.model).__name__} is a text-only language model: it has no image encoder; use a "
                         "Llava-style VLM or a MagmaEncoder (causal LM + image prefix) for image items")

    @property
    def device(self) -> torch.device:
        """The device of the wrapped encoder's parameters."""
        return next(self.model.parameters()).device

    def _text_ids(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _prefix_ids(self) -> list[int]:
        bos = self.tokenizer.bos_token_id
        return [bos] if bos is not None else []

    def layout(self, rows: list[list[Any]], device: torch.device | str | None = None) -> _Layout:
        """Token layout of normalised rows: ids, right-padding mask, positions, image slots and item spans."""
        ids_rows, img_rows, spans_rows, kinds_rows, images = [], [], [], [], []
        for r, row in enumerate(rows):
            ids, is_img, spans, kinds = list(self._prefix_ids()), [], [], []
            is_img = [False] * len(ids)
            for item in row:
                start = len(ids)
                if isinstance(item, str):
                    toks = self._text_ids(item)
                    ids += toks
                    is_img += [False] * len(toks)
                    kinds.append("text")
                else:
                    if self.kind == "text":
                        raise ValueError(f"prompt {r} has an image item but {type(self.model).__name__} is a text-only "
                                         "language model without an image encoder; use a Llava-style VLM or a MagmaEncoder")
                    if self.image_processor is None:
                        raise ValueError(f"prompt {r} has an image item but no image_processor was given to the encoder")
                    if self.image_token_id is None:
                        raise ValueError(f"prompt {r} has an image item but {type(self.model).__name__} has no "
                                         "config.image_token_id (image_token_index) to place its image features at; "
                                         "image items need a Llava-style VLM that names its placeholder token")
                    n = self.num_image_tokens
                    ids += [self.image_token_id] * n
                    is_img += [True] * n
                    images.append(item.convert("RGB"))
                    kinds.append("image")
                spans.append((start, len(ids)))
            if not ids:  # no BOS and only empty text: one EOS/pad token keeps the row attendable
                fallback = self.tokenizer.eos_token_id if self.tokenizer.eos_token_id is not None else self.tokenizer.pad_token_id
                ids, is_img = [fallback if fallback is not None else 0], [False]
            if self.max_positions is not None and len(ids) > self.max_positions:
                raise ValueError(f"prompt {r} takes {len(ids)} tokens but the language model has {self.max_positions} "
                                 "positions; shorten the text or use fewer images")
            ids_rows.append(ids)
            img_rows.append(is_img)
            spans_rows.append(spans)
            kinds_rows.append(kinds)
        length = max(len(x) for x in ids_rows)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        B = len(rows)
        input_ids = torch.full((B, length), pad, dtype=torch.long)
        mask = torch.zeros(B, length, dtype=torch.long)
        image_mask = torch.zeros(B, length, dtype=torch.bool)
        for b, (ids, is_img) in enumerate(zip(ids_rows, img_rows)):
            input_ids[b, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            mask[b, : len(ids)] = 1
            image_mask[b, : len(ids)] = torch.tensor(is_img, dtype=torch.bool)
        position_ids = (mask.cumsum(-1) - 1).clamp_min(0)
        device = self.device if device is None else device
        return _Layout(input_ids.to(device), mask.to(device), position_ids.to(device), image_mask.to(device), images,
                       spans_rows, kinds_rows)

    def _pixel_values(self, images, device):
        if not images:
            return None
        pv = self.image_processor(images=images, return_tensors="pt")["pixel_values"]
        return pv.to(device)

    def image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """``[n, N, d_lm]`` what the image slots receive (the VLM's projected features / the MAGMA prefix)."""
        if self.kind == "magma":
            return self.model.embed_images(pixel_values)
        if self.kind != "vlm":
            raise ValueError(f"{type(self.model).__name__} has no image encoder")
        owner = self.model if hasattr(self.model, "get_image_features") else self.model.model
        out = owner.get_image_features(pixel_values=pixel_values)
        if not torch.is_tensor(out) and not isinstance(out, (list, tuple)):
            out = out.pooler_output
        if isinstance(out, (list, tuple)):
            out = torch.stack([o.reshape(-1, o.shape[-1]) for o in out])
        return out

    # ------------------------------------------------------------------------------------------------ encode
    def __call__(self, prompt: Prompt, weights: PromptWeights | None = None, *, layer: int | None = None,
                 device: torch.device | str | None = None) -> EncodedPrompt:
        return self.encode(prompt, weights, layer=layer, device=device)

    def encode(self, prompt: Prompt, weights: PromptWeights | None = None, *, layer: int | None = None,
               device: torch.device | str | None = None) -> EncodedPrompt:
        """Encode one prompt or a batch (see :func:`normalize_prompts`).

        Args:
            prompt: items / rows of items.
            weights: one weight per item (per row); ``None`` = unweighted (no attention control installed).
            layer: override the encoder's hidden-state index.
            device: where the inputs go (default: the model's device).

        Returns:
            :class:`EncodedPrompt` with ``hidden_states [B, L, d_lm]`` and ``attention_mask [B, L]``.
        """
        rows, weights = normalize_prompts(prompt, weights)
        layer = self.layer if layer is None else self._check_layer(layer)
        lay = self.layout(rows, device)
        pixel_values = self._pixel_values(lay.images, lay.input_ids.device)
        key_w = None if weights is None else _key_weights(lay.spans, weights, lay.input_ids.shape[1])
        if key_w is not None:
            with attention_controls(self.lm, key_w, mode=self.weight_mode):
                hidden = self._forward(lay, pixel_values)
        else:
            hidden = self._forward(lay, pixel_values)
        return EncodedPrompt(hidden[layer], lay.attention_mask, lay.spans, lay.kinds, weights)

    def _forward(self, lay: _Layout, pixel_values):
        common = dict(attention_mask=lay.attention_mask, position_ids=lay.position_ids, output_hidden_states=True)
        if self.kind != "magma" and not takes_mask_positions(self.model):
            # its own positions do not count from 0 (Kosmos-2.5: from padding_idx + 1, derived from the pad tokens);
            # rows are right-padded, so the model's own positions of the real tokens are the right ones
            del common["position_ids"]
        if self.kind == "magma":
            out = self.model(input_ids=lay.input_ids, pixel_values=pixel_values, image_mask=lay.image_mask, **common)
        elif self.kind == "vlm":
            extra = {"pixel_values": pixel_values.to(self.model.dtype)} if pixel_values is not None else {}
            out = self.model(input_ids=lay.input_ids, **extra, **common, use_cache=False, **self._logits_kwargs())
        else:
            out = self.model(input_ids=lay.input_ids, **common, use_cache=False, **self._logits_kwargs())
        return out.hidden_states

    def _logits_kwargs(self) -> dict:
        has_head = hasattr(self.model, "get_output_embeddings") and self.model.get_output_embeddings() is not None
        return {"logits_to_keep": 1} if has_head else {}

    def embed(self, prompt: Prompt) -> tuple[torch.Tensor, torch.Tensor]:
        """``(inputs_embeds [B, L, d_lm], attention_mask [B, L])``: what the language model receives (for inspection).

        Text slots hold the token embeddings, image slots :meth:`image_features`, in prompt order.
        """
        rows, _ = normalize_prompts(prompt)
        lay = self.layout(rows)
        embeds = self.lm.get_input_embeddings()(lay.input_ids.masked_fill(lay.image_mask, 0))
        pixel_values = self._pixel_values(lay.images, lay.input_ids.device)
        if pixel_values is not None:
            feats = self.image_features(pixel_values).to(embeds.dtype)
            embeds = embeds.masked_scatter(lay.image_mask.unsqueeze(-1).expand_as(embeds), feats.reshape(-1, feats.shape[-1]))
        return embeds, lay.attention_mask


def pad_and_stack(parts: Sequence[EncodedPrompt]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad several :class:`EncodedPrompt` s to one length and concatenate them along the batch.

    Returns:
        ``(hidden_states [ΣB, L_max, D], attention_mask [ΣB, L_max])``.
    """
    length = max(p.hidden_states.shape[1] for p in parts)
    hs, ms = [], []
    for p in parts:
        extra = length - p.hidden_states.shape[1]
        hs.append(torch.nn.functional.pad(p.hidden_states, (0, 0, 0, extra)))
        ms.append(torch.nn.functional.pad(p.attention_mask, (0, extra)))
    return torch.cat(hs), torch.cat(ms)
