"""Every difference between the library versions hf_ext supports, in one place.

hf_ext supports a range of releases (``pyproject.toml``: the lower bounds are the versions of
``constraints/oldest.txt``, tested by ``.ci/run`` together with the newest releases). Where those releases
differ, the rest of the package asks this module instead of testing versions itself, so a new release
that moves an API again needs one edit here (and ``tests/test_compat.py`` shows at both ends that both
branches work). Nothing here imports torch or transformers at module level.

What differs (transformers 5.x):

- the KV cache keyword and output field: ``cache`` (≈ 5.2x on) or ``past_key_values`` (earlier 5.x; later
  releases still accept it as a deprecated alias and warn when both are given);
- ``masking_utils.create_causal_mask``: ``input_embeds``/``inputs_embeds``, ``past_key_values``/``cache``,
  and a required ``cache_position`` in earlier releases;
- composite configs: ``sub_configs_defaults`` with ``SubConfigSpec`` (recent) or a ``sub_configs`` mapping;
- beam search sized by the scores (recent) or by ``config.get_text_config().vocab_size`` (earlier 5.1x);
- image processors without torchvision: a PIL fallback in ``AutoImageProcessor`` (recent) or only the named class;
- diffusers: ``from_pretrained(dtype=...)`` (recent) or ``torch_dtype=`` (earlier);
- the private keyword arguments an ``AutoModel*.from_pretrained`` call adds before it calls a registered
  class's ``from_pretrained`` (``_from_auto``, ``_commit_hash``, ``adapter_kwargs`` …): they describe the load
  of *that* folder and must never reach a second, nested ``from_pretrained``.

Example:
    >>> from hf_ext.compat import split_loading_kwargs
    >>> hub, model, dropped = split_loading_kwargs({"_from_auto": True, "cache_dir": None, "dtype": "auto",
    ...                                             "adapter_kwargs": None, "trust_remote_code": False})
    >>> hub, model, sorted(dropped)
    ({}, {'dtype': 'auto'}, ['_from_auto', 'adapter_kwargs', 'trust_remote_code'])
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Iterator, Mapping
from functools import lru_cache
from typing import Any

__all__ = [
    "HUB_KWARGS",
    "build_causal_mask",
    "cache_argument",
    "cache_field",
    "diffusers_dtype_kwargs",
    "generation_vocab_size",
    "load_image_processor",
    "output_cache",
    "requested_attn_implementation",
    "split_loading_kwargs",
    "sub_config_spec",
]

#: Download options that apply to every repo of one load (an adapter's and the base model it names).
HUB_KWARGS = ("cache_dir", "force_download", "proxies", "local_files_only", "token")

# Bookkeeping an Auto class passes to the class it resolved, about the folder it was given: meaningless for
# another repo. (Anything starting with "_" is dropped as well: transformers' private protocol.)
_AUTO_BOOKKEEPING = ("adapter_kwargs", "code_revision", "subfolder", "trust_remote_code", "config")


# ------------------------------------------------------------------------------------------------ KV cache


def _parameters(fn: Callable) -> Mapping[str, inspect.Parameter]:
    try:
        return inspect.signature(fn).parameters
    except (TypeError, ValueError):  # builtins / C extensions: no signature
        return {}


def cache_argument(model_or_forward: Any) -> str:
    """The keyword a model's ``forward`` takes its KV cache by: ``"cache"`` or ``"past_key_values"``.

    Args:
        model_or_forward: a module (its class's ``forward`` is inspected) or a ``forward`` callable.

    Example:
        >>> def forward(input_ids, past_key_values=None): ...
        >>> cache_argument(forward)
        'past_key_values'
    """
    is_callable = inspect.isfunction(model_or_forward) or inspect.ismethod(model_or_forward)
    fn = model_or_forward if is_callable else type(model_or_forward).forward
    params = _parameters(fn)
    if "cache" in params:
        return "cache"
    if "past_key_values" not in params and not is_callable:
        # a head whose forward names neither and passes ``**kwargs`` on (Evolla): its base model decides
        inner = getattr(model_or_forward, "base_model", None)
        if inner is not None and inner is not model_or_forward:
            return cache_argument(inner)
    return "past_key_values"


@lru_cache(maxsize=1)
def cache_field() -> str:
    """The field of transformers' ``CausalLMOutputWithPast`` that holds the cache (``"cache"`` or ``"past_key_values"``).

    Example:
        >>> cache_field() in ("cache", "past_key_values")
        True
    """
    from transformers.modeling_outputs import CausalLMOutputWithPast

    return "cache" if "cache" in getattr(CausalLMOutputWithPast, "__dataclass_fields__", {}) else "past_key_values"


def output_cache(output: Any) -> Any:
    """The KV cache of a model output, whichever field name the backbone's transformers release uses (or ``None``).

    Example:
        >>> from types import SimpleNamespace
        >>> output_cache(SimpleNamespace(past_key_values="kv")), output_cache(SimpleNamespace(cache=None))
        ('kv', None)
    """
    cache = getattr(output, "cache", None)
    if cache is not None or "cache" in getattr(output, "__dataclass_fields__", ()):
        # an output class with a ``cache`` field: its ``past_key_values`` is only transformers' deprecated alias of
        # it (reading it logs a deprecation warning)
        return cache
    return getattr(output, "past_key_values", None)


# ------------------------------------------------------------------------------------------------ masks


def build_causal_mask(fn: Callable, config: Any, hidden_states: Any, attention_mask: Any, position_ids: Any) -> Any:
    """Call ``transformers.masking_utils.create_causal_mask`` (or the sliding-window variant) without a cache.

    The signature moved within transformers 5.x; this passes exactly the keywords ``fn`` takes, and only one
    name for the (absent) cache, since recent releases warn when both the new and the deprecated name are given.

    Args:
        fn: ``create_causal_mask`` or ``create_sliding_window_causal_mask``.
        config: the decoder config (``_attn_implementation``, ``sliding_window`` …).
        hidden_states: ``[B, T, D]`` input embeddings (batch size, length, dtype, device).
        attention_mask: ``[B, T]`` padding mask or ``None``.
        position_ids: ``[B, T]``.

    Example:
        >>> calls = []
        >>> def old(config, input_embeds, attention_mask, cache_position, past_key_values, position_ids=None):
        ...     calls.append(sorted(locals()))
        >>> import torch
        >>> build_causal_mask(old, None, torch.zeros(1, 3, 2), None, None)
        >>> calls[0]
        ['attention_mask', 'cache_position', 'config', 'input_embeds', 'past_key_values', 'position_ids']
    """
    params = _parameters(fn)
    kwargs = {"config": config, "attention_mask": attention_mask, "position_ids": position_ids}
    kwargs["inputs_embeds" if "inputs_embeds" in params else "input_embeds"] = hidden_states
    kwargs["cache" if "cache" in params else "past_key_values"] = None
    if "cache_position" in params:
        import torch

        kwargs["cache_position"] = torch.arange(hidden_states.shape[1], device=hidden_states.device)
    return fn(**kwargs)


# ------------------------------------------------------------------------------------------------ generation


@contextlib.contextmanager
def generation_vocab_size(config: Any, size: int) -> Iterator[None]:
    """Within the block, the text config's ``vocab_size`` is ``size``: the width of the logits the model returns.

    transformers ≤ 5.1x sizes beam search by ``config.get_text_config().vocab_size`` (later releases by the scores
    themselves), so a model whose logits are not over its backbone's vocabulary (T-FREE: over its decode dictionary)
    must say so for the duration of ``generate``. Restored on exit.

    Example:
        >>> from transformers import LlamaConfig
        >>> cfg = LlamaConfig(vocab_size=128)
        >>> with generation_vocab_size(cfg, 31):
        ...     cfg.get_text_config().vocab_size
        31
        >>> cfg.vocab_size
        128
    """
    text = config.get_text_config()
    previous = text.vocab_size
    text.vocab_size = size
    try:
        yield
    finally:
        text.vocab_size = previous


# ------------------------------------------------------------------------------------------------ processors


def load_image_processor(path: Any, **kwargs: Any) -> Any:
    """``AutoImageProcessor.from_pretrained(path)``, without torchvision on every supported release.

    Recent transformers fall back to the PIL image processors when torchvision is absent; earlier 5.1x releases make
    the Auto class require torchvision, while the processor class named in the folder's config does not.

    Args:
        path: a local folder or Hub id with a ``preprocessor_config.json``.
        **kwargs: forwarded to ``from_pretrained``.
    """
    import transformers
    from transformers import AutoImageProcessor

    try:
        return AutoImageProcessor.from_pretrained(path, **kwargs)
    except ImportError:
        config, _ = transformers.ImageProcessingMixin.get_image_processor_dict(path, **kwargs)
        name = str(config.get("image_processor_type", "")).removesuffix("Fast")
        cls = getattr(transformers, name, None)
        if cls is None:
            raise
        return cls.from_pretrained(path, **kwargs)


# ------------------------------------------------------------------------------------------------ configs


def sub_config_spec() -> Any:
    """``transformers.configuration_utils.SubConfigSpec`` where this release has it, else ``None``.

    Example:
        >>> spec = sub_config_spec()
        >>> spec is None or spec.__name__ == "SubConfigSpec"
        True
    """
    try:
        from transformers.configuration_utils import SubConfigSpec
    except ImportError:
        return None
    return SubConfigSpec


# ------------------------------------------------------------------------------------------------ diffusers


def diffusers_dtype_kwargs(dtype: Any) -> dict[str, Any]:
    """The keyword a diffusers ``from_pretrained`` takes the dtype by: ``dtype`` (recent; ``torch_dtype`` is deprecated
    there and warns) or ``torch_dtype`` (earlier releases, which do not read ``dtype``).

    Example:
        >>> import torch
        >>> list(diffusers_dtype_kwargs(torch.float16).values())
        [torch.float16]
    """
    from diffusers.pipelines import pipeline_utils

    return {"dtype" if hasattr(pipeline_utils, "_resolve_dtype") else "torch_dtype": dtype}


# ------------------------------------------------------------------------------------------------ loading


def requested_attn_implementation(config: Any) -> str | None:
    """The attention implementation a caller asked for when loading ``config`` (``None``: the default).

    ``AutoModel*.from_pretrained(folder, attn_implementation=...)`` folds the option into the config it reads for
    *folder* instead of passing it on; a class that loads a second model reads it back here.

    Example:
        >>> from transformers import PretrainedConfig
        >>> requested_attn_implementation(PretrainedConfig()), requested_attn_implementation(PretrainedConfig(attn_implementation="eager"))
        (None, 'eager')
    """
    return getattr(config, "_attn_implementation", None)


def split_loading_kwargs(kwargs: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Split the keyword arguments of a ``from_pretrained`` call that loads a *second* repo (an adapter's base model).

    Returns ``(hub, model, dropped)``:

    - ``hub``: the download options of :data:`HUB_KWARGS` that are set (they apply to both repos);
    - ``model``: the public model-loading options (``dtype``, ``device_map``, ``attn_implementation`` …), for the
      nested call;
    - ``dropped``: what an ``AutoModel*`` call added about the outer folder — anything starting with ``_``
      (``_from_auto``, ``_commit_hash`` …), ``adapter_kwargs``, ``code_revision``, ``subfolder``, ``config``, and
      ``trust_remote_code`` unless it is ``True`` (then it moves to ``model``: the user asked for it).

    ``revision`` is left in ``model``; callers decide which repo it names.

    Example:
        >>> split_loading_kwargs({"token": "t", "device_map": "cpu", "_commit_hash": "abc", "trust_remote_code": True})
        ({'token': 't'}, {'device_map': 'cpu', 'trust_remote_code': True}, {'_commit_hash': 'abc'})
    """
    hub: dict[str, Any] = {}
    model: dict[str, Any] = {}
    dropped: dict[str, Any] = {}
    for key, value in kwargs.items():
        if key in HUB_KWARGS:
            if value is not None and value is not False:
                hub[key] = value
        elif key == "trust_remote_code" and value is True:
            model[key] = value
        elif key.startswith("_") or key in _AUTO_BOOKKEEPING:
            dropped[key] = value
        else:
            model[key] = value
    return hub, model, dropped
