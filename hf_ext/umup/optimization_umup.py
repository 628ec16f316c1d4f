"""u-μP optimisation: per-tensor Adam learning rates from module roles, independent weight decay, a Trainer.

LR rules (Adam/AdamW; unit_scaling's ``lr_scale_func_adam``; roles come from the modules, never from parameter
attributes, which ``from_pretrained`` drops):

=================  ===============================================================
role               LR multiplier of the base ``lr``
=================  ===============================================================
embedding          ``1/sqrt(hidden)`` (the paper's ``1/sqrt(fan_out)``)
hidden weight      ``1/sqrt(fan_in) · 1/sqrt(D)`` (``D`` = L blocks or 2L branches)
hidden bias, norm  ``1/sqrt(D)`` inside the decoder, 1 outside
readout            1
=================  ===============================================================

Independent weight decay: ``weight_decay_group = weight_decay / lr_group``, so the per-step decay ``lr·wd`` of
AdamW does not depend on the peak LR (only on the schedule).

Example:
    >>> from hf_ext.umup import UMupConfig, UMupLlamaForCausalLM, umup_param_groups
    >>> import torch
    >>> model = UMupLlamaForCausalLM(UMupConfig(vocab_size=256, hidden_size=256, intermediate_size=1024,
    ...                                         num_hidden_layers=4, num_attention_heads=4))
    >>> groups = umup_param_groups(model, lr=1.0, weight_decay=0.1)
    >>> {g["name"]: g["lr"] for g in groups}["embedding"]
    0.0625
    >>> optimizer = torch.optim.AdamW(groups)
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from hf_ext.utils.logging import get_logger
from hf_ext.utils.validation import check_float

if TYPE_CHECKING:
    from torch.optim.lr_scheduler import LRScheduler
    from transformers import TrainingArguments

logger = get_logger(__name__)

ROLES: tuple[str, ...] = ("embedding", "hidden", "readout", "norm")


def _fan_in(p: torch.Tensor) -> int:
    if p.dim() == 1:
        return p.shape[0]
    if p.dim() == 2:
        return p.shape[1]
    if p.dim() == 3:
        return p.shape[1] * p.shape[2]
    raise ValueError(f"cannot derive fan_in of a parameter with shape {tuple(p.shape)} (ndim >= 4)")


def parameter_roles(model: nn.Module) -> dict[str, tuple[str, str, int | None]]:
    """``{parameter name: (role, kind, depth)}`` read from the modules' ``_umup_role`` / ``_umup_depth`` attributes.

    ``kind`` is ``"weight"`` or ``"bias"``; parameters of modules without a role are missing from the dict.
    """
    roles: dict[str, tuple[str, str, int | None]] = {}
    for mod_name, module in model.named_modules():
        role = getattr(module, "_umup_role", None)
        if role is None:
            continue
        if role not in ROLES:
            raise ValueError(f"module {mod_name!r} has unknown _umup_role {role!r}; use one of {ROLES}")
        depth = getattr(module, "_umup_depth", None)
        for p_name, _ in module.named_parameters(recurse=False):
            full = f"{mod_name}.{p_name}" if mod_name else p_name
            kind = "bias" if p_name == "bias" else "weight"
            roles[full] = (role, kind, depth)
    return roles


def lr_multiplier(role: str, kind: str, param: torch.Tensor, depth: int | None) -> float:
    """The Adam LR multiplier of one tensor (see the module docstring)."""
    scale = depth ** -0.5 if depth else 1.0
    if kind == "bias" or role == "norm" or role == "readout":
        return scale
    return scale * _fan_in(param) ** -0.5  # embedding ([V, h] -> h) and hidden weights


def umup_param_groups(model: nn.Module, lr: float, weight_decay: float = 0.0, *,
                      independent_weight_decay: bool = True, allow_non_unit_scaling_params: bool = False,
                      only_trainable: bool = True) -> list[dict[str, Any]]:
    """Optimizer parameter groups with u-μP's per-tensor LRs and independent weight decay.

    Tensors with the same role, LR and weight decay share a group; each group carries a ``"name"`` (e.g.
    ``"embedding"``, ``"hidden.weight.fan_in=512"``, ``"readout"``) and its ``"lr_multiplier"``.

    Args:
        model: a model whose u-μP modules carry ``_umup_role`` (e.g. :class:`UMupLlamaForCausalLM`, also after
            ``from_pretrained``: roles live on the modules, not on the tensors).
        lr: the base learning rate η (u-μP's optimum is O(1), typically 2^-1 … 2^1).
        weight_decay: base decay; with ``independent_weight_decay`` each group gets ``weight_decay / lr_group``.
        allow_non_unit_scaling_params: put parameters of role-less modules in a group ``"non_umup"`` at ``lr`` (SP)
            instead of raising.
        only_trainable: skip parameters with ``requires_grad=False``.

    Returns:
        A list of ``{"params", "lr", "weight_decay", "name", "lr_multiplier"}`` dicts for ``torch.optim.AdamW``.

    Raises:
        ValueError: a non-positive ``lr``, a negative ``weight_decay``, or parameters without a role (their names are
            listed; e.g. a LoRA adapter or a module added by hand).
    """
    check_float("lr", lr, min=0, min_open=True)
    check_float("weight_decay", weight_decay, min=0)
    roles = parameter_roles(model)
    groups: OrderedDict[tuple, dict[str, Any]] = OrderedDict()
    missing = []
    seen: set[int] = set()
    for name, p in model.named_parameters():
        if id(p) in seen or (only_trainable and not p.requires_grad):
            continue
        seen.add(id(p))
        if name not in roles:
            if not allow_non_unit_scaling_params:
                missing.append(f"{name} {tuple(p.shape)}")
                continue
            key, mult, gname = ("non_umup",), 1.0, "non_umup"
        else:
            role, kind, depth = roles[name]
            mult = lr_multiplier(role, kind, p, depth)
            if role == "hidden" and kind == "weight":
                gname = f"hidden.weight.fan_in={_fan_in(p)}"
            elif role == "hidden":
                gname = "hidden.bias"
            else:
                gname = role if kind == "weight" else f"{role}.bias"
            key = (gname, mult)
        group_lr = lr * mult
        wd = weight_decay / group_lr if independent_weight_decay and weight_decay else weight_decay
        if key not in groups:
            groups[key] = {"params": [], "lr": group_lr, "weight_decay": wd, "name": gname, "lr_multiplier": mult}
        groups[key]["params"].append(p)
    if missing:
        raise ValueError(f"{len(missing)} parameter(s) have no u-μP role (their module has no _umup_role): "
                         f"{missing[:8]}{' …' if len(missing) > 8 else ''}. Give the module a role "
                         f"(module._umup_role = one of {ROLES}), freeze them, or pass allow_non_unit_scaling_params=True "
                         "to train them at the base LR")
    return list(groups.values())


def umup_optimizer(model: nn.Module, lr: float, weight_decay: float = 0.0, *, betas: tuple[float, float] = (0.9, 0.999),
                   eps: float = 1e-8, optimizer_cls: type[torch.optim.Optimizer] = torch.optim.AdamW,
                   **kwargs: Any) -> torch.optim.Optimizer:
    """``optimizer_cls(umup_param_groups(model, lr, weight_decay), betas=…, eps=…)`` (Adam-family LR rules).

    Example:
        >>> from hf_ext.umup import UMupConfig, UMupLlamaForCausalLM
        >>> model = UMupLlamaForCausalLM(UMupConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2,
        ...                                    num_attention_heads=2, intermediate_size=64))
        >>> opt = umup_optimizer(model, lr=0.5)
        >>> len(opt.param_groups) > 1  # one group per LR rule
        True
    """
    groups = umup_param_groups(model, lr, weight_decay, **kwargs)
    return optimizer_cls(groups, betas=betas, eps=eps)


def group_learning_rates(optimizer: torch.optim.Optimizer) -> dict[str, float]:
    """``{"lr/<group name>": current lr}`` of an optimizer built from :func:`umup_param_groups` (the effective LRs)."""
    out: dict[str, float] = {}
    for i, g in enumerate(optimizer.param_groups):
        name = g.get("name", f"group{i}")
        key = f"lr/{name}"
        if key in out:
            key = f"lr/{name}#{i}"
        out[key] = float(g["lr"])
    return out


def umup_optimizers(model: nn.Module, args: TrainingArguments, num_training_steps: int
                    ) -> tuple[torch.optim.Optimizer, LRScheduler]:
    """The ``optimizers=(optimizer, scheduler)`` argument of a plain ``transformers.Trainer``, built from its args.

    Uses ``args.learning_rate``, ``args.weight_decay``, ``adam_beta1/2``, ``adam_epsilon``, ``lr_scheduler_type``
    and the warm-up fields; the scheduler scales every group's own LR by the same schedule factor.

    Example:
        >>> from transformers import TrainingArguments
        >>> from hf_ext.umup import UMupConfig, UMupLlamaForCausalLM
        >>> model = UMupLlamaForCausalLM(UMupConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2,
        ...                                         num_attention_heads=2, intermediate_size=64))
        >>> args = TrainingArguments("out", learning_rate=0.5, report_to=[])
        >>> optimizer, scheduler = umup_optimizers(model, args, num_training_steps=100)
        >>> type(scheduler).__name__  # then Trainer(model, args, train_dataset=ds, optimizers=(optimizer, scheduler))
        'LambdaLR'
    """
    from transformers import get_scheduler

    opt = umup_optimizer(model, args.learning_rate, args.weight_decay, betas=(args.adam_beta1, args.adam_beta2),
                         eps=args.adam_epsilon)
    sched = get_scheduler(args.lr_scheduler_type, opt, num_warmup_steps=args.get_warmup_steps(num_training_steps),
                          num_training_steps=num_training_steps, scheduler_specific_kwargs=args.lr_scheduler_kwargs or {})
    return opt, sched


def _trainer_cls():
    from transformers import Trainer

    class UMupTrainer(Trainer):
        """A ``transformers.Trainer`` whose optimizer applies u-μP's per-tensor LRs and independent weight decay.

        The optimizer class and its other arguments come from ``TrainingArguments`` (``optim``, betas, eps …), but
        the learning rate and weight decay are set per group by :func:`umup_param_groups` and are *not*
        overwritten by the Trainer's optimizer kwargs (the bug class of graphcore-research/torchtitan-fork's
        ``umup_optimizer.py``). Every log entry gains ``lr/<group>`` with each group's current (effective) LR.

        Example:
            >>> trainer = UMupTrainer(model=model, args=TrainingArguments("out", learning_rate=0.5),  # a sketch: needs ds  # doctest: +SKIP
            ...                       train_dataset=ds)
        """

        def create_optimizer(self, model: nn.Module | None = None) -> torch.optim.Optimizer:
            """The optimizer over :func:`umup_param_groups` of ``model`` (default: the trainer's), created once;
            the class and its other arguments come from ``TrainingArguments``."""
            opt_model = self.model if model is None else model
            if self.optimizer is None:
                groups = umup_param_groups(opt_model, self.args.learning_rate, self.args.weight_decay)
                if getattr(self, "optimizer_cls_and_kwargs", None) is not None:
                    optimizer_cls, optimizer_kwargs = self.optimizer_cls_and_kwargs
                else:
                    optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
                # lr / weight_decay are per group: drop the global ones so they cannot overwrite the groups
                optimizer_kwargs = {k: v for k, v in optimizer_kwargs.items() if k not in ("lr", "weight_decay")}
                self.optimizer = optimizer_cls(groups, **optimizer_kwargs)
                logger.info("u-μP optimizer: %s", {g["name"]: g["lr"] for g in self.optimizer.param_groups})
            return self.optimizer

        def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
            """``Trainer.log`` with each parameter group's current LR (``lr/<group>``) added to loss/LR entries."""
            if self.optimizer is not None and ("loss" in logs or "learning_rate" in logs):
                logs = {**logs, **group_learning_rates(self.optimizer)}
            super().log(logs, *args, **kwargs)

    return UMupTrainer


_UMUP_TRAINER = None


def __getattr__(name: str):
    global _UMUP_TRAINER
    if name == "UMupTrainer":
        if _UMUP_TRAINER is None:
            _UMUP_TRAINER = _trainer_cls()
        return _UMUP_TRAINER
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
