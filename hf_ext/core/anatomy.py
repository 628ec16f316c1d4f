"""Model anatomy: where the decoder layers, attention, MLP, embeddings and head of a causal LM live.

Found by walking the module tree from ``model.get_decoder()`` and ``config.num_hidden_layers``, never by
hard-coding ``model.model.layers``, so the same code serves Llama, Mistral, Qwen2, Gemma, Phi, GPT-2,
GPT-NeoX, OPT, Falcon … and the language model inside a VLM such as Llava.

Example:
    >>> from hf_ext.testing import tiny_causal_lm
    >>> anatomy = get_anatomy(tiny_causal_lm("gpt2"))
    >>> anatomy.num_layers, type(anatomy.attentions[0]).__name__
    (2, 'GPT2Attention')
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from torch import nn

from hf_ext.utils.validation import check_layers

# Child-module names seen across transformers' decoder layers; the first match wins.
_ATTENTION_NAMES = ("self_attn", "attn", "attention", "self_attention", "mixer", "multi_head_attention",
                    "temporal_block")  # RecurrentGemma: attention or a recurrent block, told apart by class name
_MLP_NAMES = ("mlp", "feed_forward", "ffn", "block_sparse_moe")
# OPT-style layers have no MLP module: its output is the second linear.
_MLP_OUTPUT_FALLBACK = ("fc2", "dense_4h_to_h")
_FINAL_NORM_NAMES = ("norm", "ln_f", "final_layer_norm", "final_layernorm", "norm_f", "final_norm")
_POSITION_NAMES = ("wpe", "embed_positions", "position_embeddings")


@dataclass
class ModelAnatomy:
    """The parts of a causal LM that hf_ext components hook into.

    Attributes:
        model: the model passed to :func:`get_anatomy`.
        text_config: the decoder's config (``config.get_text_config()``).
        decoder: the module that owns the layer stack (``LlamaModel``, ``GPT2Model``, ``OPTDecoder`` …).
        layers: the ``nn.ModuleList`` of ``num_layers`` decoder layers.
        layers_path: dotted name of ``layers`` inside ``model`` (e.g. ``"model.layers"``).
        attentions: per layer, its self-attention module, or ``None`` for a layer without one (the Mamba /
            linear-attention layers of a hybrid, every layer of a pure state-space model).
        mlps: per layer, its MLP module, or ``None`` where the layer has bare linears (OPT) or no MLP (Mamba).
        mlp_outputs: per layer, the module whose output is the MLP's output (the MLP itself, or OPT's ``fc2``,
            whose output is flattened to ``[B*T, D]``; :func:`hf_ext.core.hooks.rows` handles both), or ``None``
            for a layer without MLP.
        input_embeddings: token embedding (``model.get_input_embeddings()``).
        position_embeddings: learned absolute position embedding (GPT-2, OPT), else ``None``.
        rotary_emb: the decoder's rotary embedding module (Llama, Qwen2, GPT-NeoX …), else ``None``.
        final_modules: modules applied after the last layer, in order (final norm, OPT's ``project_out``).
        lm_head: the output projection (``model.get_output_embeddings()``), ``None`` for a bare decoder.
        family: ``config.model_type`` of the decoder.
    """

    model: nn.Module
    text_config: object
    decoder: nn.Module
    layers: nn.ModuleList
    layers_path: str
    attentions: list[nn.Module | None]
    mlps: list[nn.Module | None]
    mlp_outputs: list[nn.Module | None]
    input_embeddings: nn.Module
    position_embeddings: nn.Module | None
    rotary_emb: nn.Module | None
    final_modules: list[nn.Module]
    lm_head: nn.Module | None
    family: str
    _attention_index: dict[int, int] = field(default_factory=dict, repr=False)

    @property
    def num_layers(self) -> int:
        """Number of decoder layers."""
        return len(self.layers)

    @property
    def final_norm(self) -> nn.Module | None:
        """The final norm before the LM head (the first of ``final_modules``), or ``None``."""
        return self.final_modules[0] if self.final_modules else None

    def attention_layers(self, layers: int | Sequence[int] | str | None = None) -> list[int]:
        """The layers (of ``layers``; ``None`` = all) that have an attention module, sorted.

        Raises:
            ValueError: an explicitly named layer has no attention, or the selection has none at all.
        """
        selected = self.resolve_layers(layers)
        have = [i for i in selected if self.attentions[i] is not None]
        missing = [i for i in selected if self.attentions[i] is None]
        if layers is not None and missing:
            raise ValueError(f"decoder layers {missing} of {self.family!r} ({type(self.model).__name__}) have no attention "
                             f"module; layers with attention: {[i for i, a in enumerate(self.attentions) if a is not None]}")
        if not have:
            raise ValueError(f"{self.family!r} ({type(self.model).__name__}) has no attention module in its decoder "
                             "layers (a state-space / recurrent model): there is no attention to control")
        return have

    def layer_of(self, module: nn.Module) -> int | None:
        """Index of the decoder layer whose attention module is ``module`` (``None`` if it is not one)."""
        return self._attention_index.get(id(module))

    def resolve_layers(self, layers: int | Sequence[int] | str | None) -> list[int]:
        """Normalise a layer selection (``None`` or ``"all"`` = all, ints may be negative) to sorted unique indices.

        Raises:
            ValueError: an index outside ``[-num_layers, num_layers)``, another string, an empty list.
            TypeError: a non-int index (also a ``ValueError``: :class:`~hf_ext.utils.validation.ArgumentTypeError`).
        """
        if layers is None:
            return list(range(self.num_layers))
        return check_layers("layers", layers, self.num_layers)


def _child(module: nn.Module, names) -> tuple[str, nn.Module] | tuple[None, None]:
    children = dict(module.named_children())
    for name in names:
        if name in children:
            return name, children[name]
    return None, None


def _is_attention(module: nn.Module | None) -> bool:
    return module is not None and any(word in type(module).__name__.lower() for word in ("attention", "attn"))


def _attention_of(layer: nn.Module) -> nn.Module | None:
    """A layer's self-attention: a child with an attention name and class, else such a grandchild (DBRX's
    ``norm_attn_norm.attn``, CPM-Ant's ``self_att.self_attention``, Zamba's shared ``shared_transf.self_attn``)."""
    _, attn = _child(layer, _ATTENTION_NAMES)
    if attn is not None:
        return attn if _is_attention(attn) else None  # a Mamba "mixer" is no attention
    found = [a for _, child in layer.named_children() for a in [_child(child, _ATTENTION_NAMES)[1]] if _is_attention(a)]
    return found[0] if len(found) == 1 else None


def _find_layer_list(decoder: nn.Module, num_layers: int, label: str = "the model") -> tuple[str, nn.ModuleList]:
    candidates = [
        (name, mod)
        for name, mod in decoder.named_modules()
        if isinstance(mod, nn.ModuleList) and len(mod) == num_layers and name.count(".") <= 1
    ]
    if not candidates:
        # say what the decoder holds instead: stacks run in cycles (HRM), several attentions per layer (LongCat)
        lists = [f"{name} ({len(mod)})" for name, mod in decoder.named_modules()
                 if isinstance(mod, nn.ModuleList) and name.count(".") <= 2][:6]
        raise ValueError(
            f"could not find a ModuleList of {num_layers} decoder layers in {type(decoder).__name__} (the decoder of "
            f"{label}, config.num_hidden_layers={num_layers}); its layer lists: {', '.join(lists) or 'none'}. "
            "hf_ext supports transformers "
            "causal LMs whose decoder runs num_hidden_layers layers, each once, from one nn.ModuleList (Llama, "
            "Mistral, Qwen2, Gemma, Phi, GPT-2, GPT-NeoX, OPT, Falcon, …), not stacks run in cycles or layers "
            "with several attention sublayers"
        )
    # The shallowest list wins (a vision tower's layer list sits deeper in a VLM's decoder, if at all).
    return min(candidates, key=lambda item: item[0].count("."))


def _refuse_stack_off_the_input(model: nn.Module, decoder: nn.Module, layers_path: str, embeddings: nn.Module,
                                label: str) -> None:
    """Raise where the layer stack found does not read the input tokens: a model that takes ``decoder_input_ids``
    and embeds its ``input_ids`` outside that stack (DiffusionGemma encodes the prompt with one stack and refines
    a sampled canvas with another) is an encoder-decoder, whose logits are not one per input token."""
    import inspect

    forward = getattr(model, "forward", None)
    if forward is None or "decoder_input_ids" not in inspect.signature(forward).parameters:
        return
    if any(m is embeddings for m in decoder.modules()):
        return
    where = next((name for name, m in model.named_modules() if m is embeddings), type(embeddings).__name__)
    raise ValueError(
        f"{label} is not a decoder-only causal LM over its input: its decoder stack {layers_path} does not read the "
        f"input tokens (they are embedded by {where}, outside it) and it takes decoder_input_ids, so its logits are "
        "not one per input token (an encoder-decoder, or a diffusion model refining a sampled canvas)")


def _accessor(model: nn.Module, name: str):
    """``model.<name>()``, or ``None`` where the model has no such accessor or it raises (some backbones do)."""
    get = getattr(model, name, None)
    if get is None:
        return None
    try:
        return get()
    except (AttributeError, NotImplementedError):
        return None


def _get_decoder(model: nn.Module) -> nn.Module:
    decoder = _accessor(model, "get_decoder")
    if decoder is None and hasattr(model, "language_model"):
        decoder = model.language_model
    if decoder is None or not any(isinstance(m, nn.ModuleList) for m in decoder.modules()):
        # transformers' default get_decoder() returns any attribute named `decoder`: ModernBERT-decoder's is its
        # output Linear; the layer stack is then in the base model
        decoder = getattr(model, "base_model", model)
    # A VLM's get_decoder() may return the language model *with* head; descend to its decoder.
    if decoder is not model and hasattr(decoder, "get_decoder") and decoder.get_decoder() is not decoder:
        try:
            inner = decoder.get_decoder()
            if inner is not None:
                decoder = inner
        except (AttributeError, NotImplementedError):
            pass
    return decoder


def get_anatomy(model: nn.Module) -> ModelAnatomy:
    """Locate the parts of a transformers causal LM (or the language model of a VLM).

    Args:
        model: a ``PreTrainedModel`` such as ``AutoModelForCausalLM.from_pretrained(...)``, its bare decoder
            (``LlamaModel``) or a VLM (``LlavaForConditionalGeneration``).

    Returns:
        A :class:`ModelAnatomy`. It is recomputed on every call (a walk over the module tree, milliseconds even
        for 8B models), so it never goes stale after modules are swapped.

    Raises:
        ValueError: the module tree has no recognisable decoder layers, attention or MLP; the message names the
            model class and what was not found.

    Example:
        >>> from hf_ext.testing import tiny_causal_lm
        >>> get_anatomy(tiny_causal_lm("opt")).mlp_outputs[0].__class__.__name__
        'Linear'
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"get_anatomy expects a torch.nn.Module (a transformers model), got {type(model).__name__}")
    config = getattr(model, "config", None)
    if config is None:
        raise ValueError(f"{type(model).__name__} has no `config`; pass a transformers PreTrainedModel")
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    num_layers = getattr(text_config, "num_hidden_layers", None)
    if not isinstance(num_layers, int):
        raise ValueError(f"{type(model).__name__}'s config has no integer `num_hidden_layers`; cannot locate its decoder layers")

    decoder = _get_decoder(model)
    label = f"{getattr(text_config, 'model_type', '?')!r} ({type(model).__name__})"
    rel_path, layers = _find_layer_list(decoder, num_layers, label)
    if "." in rel_path:  # the decoder is the module that owns the layer list (not a head wrapper around it)
        owner, rel_path = rel_path.rsplit(".", 1)
        decoder = decoder.get_submodule(owner)
    decoder_path = next((name for name, mod in model.named_modules() if mod is decoder), "")
    layers_path = ".".join(p for p in (decoder_path, rel_path) if p)

    attentions, mlps, mlp_outputs = [], [], []
    for layer in layers:
        # Hybrid stacks mix attention layers with state-space / linear-attention ones, and pure SSMs have none:
        # a layer's attention is a child with an attention name whose class is an attention (not a Mamba mixer).
        attn = _attention_of(layer)
        _, mlp = _child(layer, _MLP_NAMES)
        out = mlp if mlp is not None else _child(layer, _MLP_OUTPUT_FALLBACK)[1]
        attentions.append(attn)
        mlps.append(mlp)
        mlp_outputs.append(out)

    final_modules = []
    _, norm = _child(decoder, _FINAL_NORM_NAMES)
    if norm is not None:
        final_modules.append(norm)
    _, project_out = _child(decoder, ("project_out",))
    if project_out is not None:
        final_modules.append(project_out)

    input_embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    if input_embeddings is None:
        raise ValueError(f"{type(model).__name__} has no input embeddings (get_input_embeddings() returned None)")
    lm_head = _accessor(model, "get_output_embeddings")
    _refuse_stack_off_the_input(model, decoder, layers_path, input_embeddings, label)

    anatomy = ModelAnatomy(
        model=model,
        text_config=text_config,
        decoder=decoder,
        layers=layers,
        layers_path=layers_path,
        attentions=attentions,
        mlps=mlps,
        mlp_outputs=mlp_outputs,
        input_embeddings=input_embeddings,
        position_embeddings=_child(decoder, _POSITION_NAMES)[1],
        rotary_emb=getattr(decoder, "rotary_emb", None),
        final_modules=final_modules,
        lm_head=lm_head,
        family=getattr(text_config, "model_type", type(model).__name__),
        _attention_index={id(a): i for i, a in enumerate(attentions) if a is not None},
    )
    return anatomy
