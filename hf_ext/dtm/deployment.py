"""Deploying a DTM compression plan: real int8 modules, safetensors save/load, pruning masks through fine-tuning.

:func:`apply_plan` makes a :class:`~hf_ext.dtm.compression.CompressionPlan` real (magnitude pruning, then
:class:`~hf_ext.dtm.int8.Int8WeightOnlyLinear` or an optional torchao / optimum-quanto backend);
:func:`save_compressed`/:func:`load_compressed` round-trip the result with the plan; :class:`PruningMaskCallback`
keeps pruned weights at zero while ``transformers.Trainer`` fine-tunes.

Example:
    >>> import tempfile
    >>> from hf_ext.dtm import CompressionPlan
    >>> model = tiny_causal_lm("llama", seed=0)
    >>> plan = CompressionPlan(int8=["model.layers.0.mlp.up_proj"], sparsity={"model.layers.1.mlp.up_proj": 0.5})
    >>> masks = apply_plan(model, plan)
    >>> path = save_compressed(model, plan, tempfile.mkdtemp())
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from hf_ext.utils.loading import ArtifactError, require_file
from hf_ext.utils.logging import get_logger
from hf_ext.utils.saving import atomic_directory, verify_manifest

from .int8 import Int8WeightOnlyLinear, linear_weight
from .perturbation import check_sparsity, get_component, magnitude_prune_weight
from .plan import CompressionPlan

if TYPE_CHECKING:
    from transformers import TrainerControl, TrainerState, TrainingArguments

logger = get_logger(__name__)

__all__ = ["PruningMaskCallback", "apply_plan", "load_compressed", "save_compressed"]




def apply_plan(model: nn.Module, plan: CompressionPlan, *, backend: str = "torch") -> dict[str, torch.Tensor]:
    """Apply a plan **in place**: magnitude-prune by ``plan.sparsity`` then convert ``plan.int8`` to int8.

    Args:
        model: the model (deep-copy it first to keep the original).
        plan: a :class:`CompressionPlan`.
        backend: ``"torch"`` (default: :class:`~hf_ext.dtm.int8.Int8WeightOnlyLinear`, pure torch on
            ``torch._weight_int8pack_mm``), ``"torchao"`` (``Int8WeightOnlyConfig``) or ``"quanto"``
            (optimum-quanto ``qint8`` weights); the optional ones must be installed.

    Returns:
        ``{component: bool mask [out, in]}`` of kept weights for the pruned components (for
        :class:`PruningMaskCallback`).

    Example:
        >>> import copy
        >>> from hf_ext.dtm import CompressionPlan
        >>> model = tiny_causal_lm("llama", seed=0)
        >>> plan = CompressionPlan(sparsity={"model.layers.1.mlp.up_proj": 0.5})
        >>> masks = apply_plan(copy.deepcopy(model), plan)
        >>> round(masks["model.layers.1.mlp.up_proj"].float().mean().item(), 2)  # share of weights kept
        0.5
    """
    if backend not in ("torch", "torchao", "quanto"):
        raise ValueError(f"unknown backend {backend!r}; use 'torch', 'torchao' or 'quanto'")
    masks: dict[str, torch.Tensor] = {}
    for name, s in plan.sparsity.items():
        check_sparsity(s)
        module = get_component(model, name)
        with torch.no_grad():
            pruned = magnitude_prune_weight(linear_weight(module), s)
            module.weight.copy_(pruned if isinstance(module, nn.Linear) else pruned.t())
        masks[name] = pruned != 0
    for name in plan.int8:
        get_component(model, name)
    if backend == "torch":
        for name in plan.int8:
            model.set_submodule(name, Int8WeightOnlyLinear.from_linear(model.get_submodule(name)))
    elif backend == "torchao":
        ao = _require("torchao.quantization", "torchao")
        targets = set(plan.int8)
        ao.quantize_(model, ao.Int8WeightOnlyConfig(), filter_fn=lambda m, fqn: fqn in targets)
    else:
        quanto = _require("optimum.quanto", "optimum-quanto")
        # quanto swaps children of the module it is given, so quantize from the root with exact-name includes
        quanto.quantize(model, weights=quanto.qint8, include=list(plan.int8))
        quanto.freeze(model)
    return masks


def _require(module: str, dist: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(f"backend needs {dist}: pip install {dist} ({err})") from err


def save_compressed(model: nn.Module, plan: CompressionPlan, path: str | Path) -> Path:
    """Save a model after :func:`apply_plan` (torch backend): ``model.safetensors`` (int8 weights + scales) and
    ``dtm_plan.json``. Load with :func:`load_compressed`.

    The folder is written atomically (:func:`hf_ext.utils.saving.atomic_directory`): an interrupted save leaves the
    previous model and plan, never one's weights with the other's plan."""
    from safetensors.torch import save_model

    path = Path(path).expanduser()
    with atomic_directory(path, prune=True) as staging:
        save_model(model, str(staging / "model.safetensors"))
        (staging / "dtm_plan.json").write_text(plan.to_json())
    return path


def load_compressed(model: nn.Module, path: str | Path) -> tuple[nn.Module, CompressionPlan]:
    """Rebuild the int8 structure of ``dtm_plan.json`` on a freshly built base ``model`` (same architecture) and load
    the saved weights into it (strict). Returns ``(model, plan)``."""
    from safetensors.torch import load_model

    path = Path(path).expanduser()
    verify_manifest(path)
    plan_path = require_file(path / "dtm_plan.json", "the compression plan (dtm_plan.json)")
    weights = require_file(path / "model.safetensors", "the compressed weights (model.safetensors)")
    plan = CompressionPlan.from_json(plan_path.read_text(encoding="utf-8"))
    for name in plan.int8:
        model.set_submodule(name, Int8WeightOnlyLinear.from_linear(get_component(model, name)))
    try:  # load_model, not load_state_dict: it knows the tied weights save_model wrote once
        load_model(model, str(weights), strict=True)
    except Exception as err:  # noqa: BLE001 - SafetensorError of a damaged file, RuntimeError of a mismatch
        raise ArtifactError(f"{weights} cannot be loaded into this model with the plan in {plan_path} "
                            f"({type(err).__name__}: {err})") from err
    return model, plan


def _trainer_callback_base():
    try:
        from transformers import TrainerCallback
    except ImportError:  # pragma: no cover
        return object
    return TrainerCallback


class PruningMaskCallback(_trainer_callback_base()):
    """``transformers.TrainerCallback`` that keeps pruned weights at zero through fine-tuning.

    The masks (from :func:`apply_plan`) are re-applied at the start of training and after every optimizer step
    (``on_step_end``), so momentum or weight decay cannot regrow pruned weights.

    Args:
        model: the pruned model (the masks' module names refer to it).
        masks: ``{component: bool mask [out, in]}``.

    Example:
        >>> from hf_ext.dtm import CompressionPlan
        >>> model = tiny_causal_lm("llama", seed=0)
        >>> masks = apply_plan(model, CompressionPlan(sparsity={"model.layers.1.mlp.up_proj": 0.5}))
        >>> callback = PruningMaskCallback(model, masks)  # Trainer(..., callbacks=[callback])
    """

    def __init__(self, model: nn.Module, masks: Mapping[str, torch.Tensor]):
        self.targets = []
        for name, mask in masks.items():
            module = get_component(model, name)
            mask = mask if isinstance(module, nn.Linear) else mask.t()
            if tuple(mask.shape) != tuple(module.weight.shape):
                raise ValueError(f"mask for {name!r} has shape {tuple(mask.shape)}, weight has {tuple(module.weight.shape)}")
            self.targets.append((module, mask.to(module.weight.device)))

    def apply(self) -> None:
        """Zero the pruned weights now."""
        with torch.no_grad():
            for module, mask in self.targets:
                module.weight.mul_(mask.to(module.weight.dtype))

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                       **kwargs: Any) -> None:
        """Zero the pruned weights before the first step."""
        self.apply()

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                    **kwargs: Any) -> None:
        """Zero the pruned weights again after each optimizer step."""
        self.apply()
