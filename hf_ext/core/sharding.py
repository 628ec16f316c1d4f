"""FSDP2 sharding shared by every trainable component: ``fully_shard`` each unit, then the root.

The units of a transformers causal LM are its decoder layers, found by :func:`hf_ext.core.get_anatomy` (never by a
hard-coded ``model.model.layers``); a component whose trainable part is not a decoder stack (a UNet, a sparse
autoencoder) passes its own units. After :func:`shard_model` every parameter is a ``DTensor`` sharded along dim 0
over the processes; each unit all-gathers its parameters for its forward and backward and reduce-scatters (averages)
the gradients, so build the optimizer **after** sharding, from the model's (now sharded) parameters.

How sharding is asked for:

* ``accelerate launch --config_file <a config with fsdp_version: 2>`` (GPUs): :func:`sharding_kwargs` reads the
  FSDP2 plugin (``reshard_after_forward``, mixed precision, CPU offload). The components shard the model themselves
  and do **not** pass it to ``accelerator.prepare`` (Accelerate would wrap it with its own policy).
* ``torchrun ... --fsdp`` (CPU + gloo, or GPUs without an Accelerate config): Accelerate ignores an FSDP plugin on
  CPU (its FSDP path exists only for accelerator devices), so the components take an explicit ``fsdp=True``. An
  ``accelerate launch`` of an FSDP2 config on CPU (``ACCELERATE_USE_FSDP`` set, plugin dropped) is honoured too.

Saving: :func:`unsharded_copy` gathers the full weights (a collective: every process must call it) and returns, on
the main process, a plain copy of the module for ``save_pretrained``; :func:`gather_full_tensors` does the same for a
dict of tensors (a checkpoint's parameters and optimizer state).

Example (2 processes; run with ``torchrun --nproc_per_node 2 script.py``):
    >>> import torch
    >>> from hf_ext.core.sharding import shard_model, unsharded_copy
    >>> from hf_ext.testing import tiny_causal_lm
    >>> torch.distributed.init_process_group("gloo")  # needs a process group  # doctest: +SKIP
    >>> model = shard_model(tiny_causal_lm("llama"))  # needs a process group  # doctest: +SKIP
    >>> type(model.lm_head.weight).__name__  # needs a process group  # doctest: +SKIP
    'DTensor'
    >>> optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)  # needs a process group  # doctest: +SKIP
    >>> plain = unsharded_copy(model)  # a LlamaForCausalLM on rank 0, None elsewhere  # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from hf_ext.utils.logging import get_logger

if TYPE_CHECKING:
    from accelerate import Accelerator
    from torch.distributed.device_mesh import DeviceMesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, OffloadPolicy

logger = get_logger(__name__)

__all__ = [
    "decoder_layers", "gather_full_tensors", "is_sharded", "original_class", "shard_like", "shard_model",
    "sharding_kwargs", "sharding_report", "unsharded_copy",
]


def _dist():
    import torch.distributed as dist

    return dist


def _require_process_group(what: str) -> None:
    dist = _dist()
    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError(
            f"{what} needs an initialised torch.distributed process group: launch with `torchrun --nproc_per_node N "
            "...` (CPU: gloo) or `accelerate launch --config_file ...` and create the `accelerate.Accelerator` (or "
            "call torch.distributed.init_process_group) before sharding")


def is_sharded(module: nn.Module) -> bool:
    """Whether any parameter of ``module`` is a ``DTensor`` (``fully_shard`` was applied to it or a submodule)."""
    from torch.distributed.tensor import DTensor

    return any(isinstance(p, DTensor) for p in module.parameters())


def sharding_report(module: nn.Module) -> dict[str, Any]:
    """What sharding did to ``module``: parameter counts and the elements this process holds.

    Returns:
        ``{"sharded", "parameters", "dtensor_parameters", "global_numel", "local_numel"}``: with FSDP2 over N
        processes every parameter is a ``DTensor`` and ``local_numel`` is about ``global_numel / N``.

    Example:
        >>> sharding_report(torch.nn.Linear(2, 3))
        {'sharded': False, 'parameters': 2, 'dtensor_parameters': 0, 'global_numel': 9, 'local_numel': 9}
    """
    from torch.distributed.tensor import DTensor

    params = list(module.parameters())
    dtensors = [p for p in params if isinstance(p, DTensor)]
    return {"sharded": bool(dtensors), "parameters": len(params), "dtensor_parameters": len(dtensors),
            "global_numel": sum(p.numel() for p in params),
            "local_numel": sum(p.to_local().numel() if isinstance(p, DTensor) else p.numel() for p in params)}


def decoder_layers(model: nn.Module) -> list[nn.Module]:
    """The decoder layers of a transformers causal LM (or of a VLM's language model), via the model anatomy.

    Example:
        >>> from hf_ext.testing import tiny_causal_lm
        >>> [type(m).__name__ for m in decoder_layers(tiny_causal_lm("gpt2"))]
        ['GPT2Block', 'GPT2Block']
    """
    from .anatomy import get_anatomy

    return list(get_anatomy(model).layers)


def _mesh(device: torch.device | str | None):
    from torch.distributed.device_mesh import init_device_mesh

    dist = _dist()
    kind = torch.device(device).type if device is not None else ("cuda" if torch.cuda.is_available() else "cpu")
    return init_device_mesh(kind, (dist.get_world_size(),))


def shard_model(model: nn.Module, units: Iterable[nn.Module] | None = None, *, device: torch.device | str | None = None,
                mesh: DeviceMesh | None = None, reshard_after_forward: bool = True,
                mp_policy: MixedPrecisionPolicy | None = None, offload_policy: OffloadPolicy | None = None) -> nn.Module:
    """``fully_shard`` every unit of ``model`` (default: its decoder layers), then ``model`` itself (the root).

    Args:
        model: the module to shard (in place; it is also returned). A transformers causal LM when ``units`` is
            ``None``.
        units: submodules of ``model`` that become their own FSDP units, in order (``[]``: only the root). Each unit's
            parameters are gathered just for its own forward/backward, so peak memory is one unit plus the shards.
            A unit must be *called* as a module (``unit(x)``): code that reads ``unit.weight`` directly belongs in
            the root.
        device: where the shards live (default: CUDA when available, else CPU); ignored when ``mesh`` is given.
        mesh: a 1-D ``DeviceMesh`` over the processes (default: all processes of the default group).
        reshard_after_forward, mp_policy, offload_policy: passed to ``fully_shard`` (``None`` = its defaults); see
            :func:`sharding_kwargs` for reading them from an Accelerate FSDP2 config.

    Returns:
        ``model``, whose parameters are now ``DTensor`` s (its class becomes ``FSDP<Class>``).

    Raises:
        RuntimeError: no process group (see the module docstring for the launch commands).
        ValueError: ``model`` is already sharded, or a unit is not a submodule of ``model``.
        TypeError: ``model`` is not an ``nn.Module``.
    """
    from torch.distributed.fsdp import MixedPrecisionPolicy, OffloadPolicy, fully_shard

    if not isinstance(model, nn.Module):
        raise TypeError(f"shard_model expects a torch.nn.Module, got {type(model).__name__}")
    _require_process_group("shard_model")
    if is_sharded(model):
        raise ValueError(f"{type(model).__name__} is already sharded (its parameters are DTensors); shard a model once")
    units = decoder_layers(model) if units is None else list(units)
    inside = {id(m) for m in model.modules()}
    for unit in units:
        if not isinstance(unit, nn.Module) or id(unit) not in inside or unit is model:
            raise ValueError(f"every unit must be a submodule of the {type(model).__name__} being sharded (the root is "
                             f"sharded last, by itself); got {type(unit).__name__}")
    _check_no_shared_parameters(model, units)
    mesh = mesh if mesh is not None else _mesh(device)
    kwargs = {"mesh": mesh, "reshard_after_forward": reshard_after_forward,
              "mp_policy": mp_policy if mp_policy is not None else MixedPrecisionPolicy(),
              "offload_policy": offload_policy if offload_policy is not None else OffloadPolicy()}
    for unit in units:
        fully_shard(unit, **kwargs)
    fully_shard(model, **kwargs)
    logger.info("sharded %s over %d processes: %d units + root", type(model).__name__, mesh.size(), len(units))
    return model


def _check_no_shared_parameters(model: nn.Module, units: list[nn.Module]) -> None:
    """A parameter tied across an FSDP unit's boundary (an embedding tied to a head in another unit) would belong to
    two units, which FSDP2 cannot handle: name it instead of failing later."""
    names = {id(m): n for n, m in model.named_modules(remove_duplicate=False)}
    prefixes = [(names[id(unit)] + ".", i) for i, unit in enumerate(units)]
    seen: dict[int, tuple[int | None, str]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        inside = [(len(prefix), i) for prefix, i in prefixes if name.startswith(prefix)]
        here = max(inside)[1] if inside else None  # the innermost unit holding this name (None: the root)
        first = seen.setdefault(id(p), (here, name))
        if first[0] != here:
            raise ValueError(f"parameter {name!r} is the same tensor as {first[1]!r} but lies in another FSDP unit "
                             "(tied weights); keep tied modules in one unit or in the root")


# ------------------------------------------------------------------------------------------------ Accelerate


def _env_requests_fsdp() -> bool:
    return os.environ.get("ACCELERATE_USE_FSDP", "false").lower() in ("1", "true", "yes")


def sharding_kwargs(accelerator: Accelerator | None = None, fsdp: bool = False) -> dict[str, Any] | None:
    """The ``fully_shard`` settings this run asks for, or ``None`` when it asks for no sharding.

    Sharding is asked for by ``fsdp=True`` (``--fsdp`` on the command line) or by an Accelerate launch with an FSDP2
    config: ``accelerator.is_fsdp2`` on GPUs, or ``ACCELERATE_USE_FSDP=true`` + ``FSDP_VERSION=2`` in the environment
    where Accelerate dropped the plugin (CPU). The plugin's ``reshard_after_forward``, mixed-precision policy and CPU
    offload are returned as :func:`shard_model` keyword arguments.

    Args:
        accelerator: the run's ``accelerate.Accelerator`` (or ``None``).
        fsdp: shard even without an FSDP2 launch.

    Returns:
        ``None`` (no sharding) or a dict for ``shard_model(model, units, **kwargs)`` (empty: the defaults).

    Raises:
        ValueError: the launch asks for FSDP version 1 (hf_ext shards with FSDP2 only).

    Example:
        >>> sharding_kwargs(None) is None, sharding_kwargs(None, fsdp=True)
        (True, {})
    """
    plugin = None
    state = getattr(accelerator, "state", None)
    if accelerator is not None and getattr(accelerator, "distributed_type", None) is not None \
            and str(accelerator.distributed_type).endswith("FSDP"):
        plugin = getattr(state, "fsdp_plugin", None)
    elif _env_requests_fsdp():
        from accelerate.utils import FullyShardedDataParallelPlugin

        plugin = FullyShardedDataParallelPlugin()  # reads the FSDP_* variables `accelerate launch` exported
    if plugin is None:
        return {} if fsdp else None
    version = int(getattr(plugin, "fsdp_version", 1) or 1)
    if version != 2:
        raise ValueError(f"the Accelerate config asks for fsdp_version {version}; hf_ext shards with FSDP2: set "
                         "`fsdp_version: 2` in the config (see configs/accelerate/fsdp2.yaml)")
    kwargs: dict[str, Any] = {}
    if getattr(plugin, "reshard_after_forward", None) is not None:
        kwargs["reshard_after_forward"] = bool(plugin.reshard_after_forward)
    if getattr(plugin, "mixed_precision_policy", None) is not None:
        kwargs["mp_policy"] = plugin.mixed_precision_policy
    from torch.distributed.fsdp import CPUOffloadPolicy

    if isinstance(getattr(plugin, "cpu_offload", None), CPUOffloadPolicy):
        kwargs["offload_policy"] = plugin.cpu_offload
    return kwargs


# ------------------------------------------------------------------------------------------------ gathering


def gather_full_tensors(tensors: Mapping[str, Any]) -> dict[str, Any]:
    """``DTensor`` values → full CPU tensors (a collective: every process calls it, with the same keys in the same
    order); plain tensors → detached CPU tensors; other values are kept.

    Example:
        >>> gather_full_tensors({"w": torch.ones(2), "step": 3})
        {'w': tensor([1., 1.]), 'step': 3}
    """
    from torch.distributed.tensor import DTensor

    out: dict[str, Any] = {}
    for key, value in tensors.items():
        if isinstance(value, DTensor):
            out[key] = value.full_tensor().detach().cpu()
        elif torch.is_tensor(value):
            out[key] = value.detach().cpu()
        else:
            out[key] = value
    return out


def shard_like(full: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A full tensor distributed as ``like`` (a ``DTensor``: same mesh and placements), or ``full`` on ``like``'s
    device and dtype when ``like`` is a plain tensor. The inverse of :func:`gather_full_tensors`, for resuming.

    Raises:
        ValueError: ``full`` and ``like`` have different shapes.
    """
    from torch.distributed.tensor import DTensor, distribute_tensor

    if tuple(full.shape) != tuple(like.shape):
        raise ValueError(f"cannot place a tensor of shape {tuple(full.shape)} where one of shape {tuple(like.shape)} "
                         "is expected (a checkpoint of another model?)")
    if isinstance(like, DTensor):
        return distribute_tensor(full.to(like.dtype), like.device_mesh, like.placements, src_data_rank=None)
    return full.to(device=like.device, dtype=like.dtype)


def original_class(module: nn.Module) -> type:
    """The class ``module`` had before ``fully_shard`` (which swaps it for a dynamic ``FSDP<Class>`` subclass)."""
    from torch.distributed.fsdp import FSDPModule

    return next(c for c in type(module).__mro__ if not issubclass(c, FSDPModule))


def _fresh_instance(cls: type, module: nn.Module) -> nn.Module:
    config = getattr(module, "config", None)
    if config is None:
        raise TypeError(f"unsharded_copy rebuilds a module from its `config`; {cls.__name__} has none")
    try:
        from transformers import PreTrainedModel

        if issubclass(cls, PreTrainedModel):
            return cls._from_config(config)
    except ImportError:  # pragma: no cover - transformers is a dependency
        pass
    if hasattr(cls, "from_config") and hasattr(cls, "register_to_config"):  # a diffusers ConfigMixin
        # diffusers drops keys listed in `_use_default_values` (it lists positional arguments too): pass them all
        return cls.from_config({k: v for k, v in dict(config).items() if k != "_use_default_values"})
    return cls(config)


def unsharded_copy(module: nn.Module) -> nn.Module | None:
    """A plain (unsharded, CPU) copy of a sharded ``module`` with its full weights, for ``save_pretrained``.

    A collective: every process must call it; the full weights are materialised on the main process only. The copy is
    rebuilt from ``module.config`` on the meta device (a transformers ``PreTrainedModel``, a diffusers ``ModelMixin``,
    or any class taking its config as the only argument, such as :class:`hf_ext.scar.ScarAdapter`), then receives the
    gathered state dict and the module's buffers. An unsharded ``module`` is returned as is.

    Args:
        module: a model sharded with :func:`shard_model`.

    Returns:
        The copy (in ``eval()`` mode) on the main process, ``None`` on the others.

    Raises:
        TypeError: the module has no ``config`` to rebuild it from.
        RuntimeError: the gathered weights do not cover the rebuilt module's parameters.
    """
    if not is_sharded(module):
        return module
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    full = get_model_state_dict(module, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if _dist().get_rank() != 0:
        return None
    cls = original_class(module)
    with torch.device("meta"):
        copy = _fresh_instance(cls, module)
    copy.load_state_dict(full, strict=False, assign=True)
    for name, buf in module.named_buffers():
        owner, _, leaf = name.rpartition(".")
        target = copy.get_submodule(owner) if owner else copy
        persistent = leaf not in getattr(target, "_non_persistent_buffers_set", set())
        target.register_buffer(leaf, buf.detach().cpu().clone(), persistent=persistent)
    if hasattr(copy, "tie_weights"):
        copy.tie_weights()
    missing = [n for n, p in copy.named_parameters() if p.is_meta]
    if missing:
        raise RuntimeError(f"the gathered state dict of {cls.__name__} lacks {missing[:5]}: cannot rebuild it")
    return copy.eval()
