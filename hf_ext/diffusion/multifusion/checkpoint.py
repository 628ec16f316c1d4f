"""MultiFusion training checkpoints: trained parameters and AdamW state as safetensors + JSON (never pickle).

:func:`save_checkpoint` writes ``trainable.safetensors``, ``optimizer.safetensors`` + ``optimizer.json`` and
``training_state.json``; :func:`load_checkpoint` reads them back into (possibly FSDP2-sharded) parameters and
optimizer. A sharded run gathers full tensors first (:func:`gather_for_checkpoint`), so its checkpoints are the same
files as one process writes and resume on any number of processes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from hf_ext.utils.loading import load_safetensors, read_json

if TYPE_CHECKING:
    from accelerate import Accelerator

__all__ = ["gather_for_checkpoint", "load_checkpoint", "save_checkpoint", "write_checkpoint"]


def save_checkpoint(directory: str | os.PathLike, params: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer | dict | None = None,
                    state: dict | None = None) -> Path:
    """Write ``trainable.safetensors``, the optimizer state (``optimizer.safetensors`` + ``.json``) and ``state``.

    ``optimizer`` is an optimizer or its ``state_dict()`` (a sharded run passes the gathered one, see
    :func:`gather_for_checkpoint`); ``params`` must hold full (not sharded) tensors.
    """
    from hf_ext.utils.saving import atomic_directory

    with atomic_directory(directory) as out:  # an interrupted save leaves the previous checkpoint
        _write_checkpoint_files(out, params, optimizer, state)
    return Path(directory).expanduser()


def _write_checkpoint_files(out: Path, params: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer | dict | None,
                            state: dict | None) -> None:
    from safetensors.torch import save_file

    save_file({n: p.detach().cpu().contiguous() for n, p in params.items()}, str(out / "trainable.safetensors"))
    if optimizer is not None:
        sd = optimizer.state_dict() if isinstance(optimizer, torch.optim.Optimizer) else optimizer
        tensors, meta = {}, {"param_groups": sd["param_groups"], "state": {}}
        for pid, st in sd["state"].items():
            meta["state"][str(pid)] = {}
            for key, value in st.items():
                if torch.is_tensor(value):
                    tensors[f"{pid}.{key}"] = value.detach().cpu().contiguous()
                    meta["state"][str(pid)][key] = "__tensor__"
                else:
                    meta["state"][str(pid)][key] = value
        save_file(tensors, str(out / "optimizer.safetensors"))
        (out / "optimizer.json").write_text(json.dumps(meta), encoding="utf-8")
    (out / "training_state.json").write_text(json.dumps(state or {}, indent=1), encoding="utf-8")


def load_checkpoint(directory: str | os.PathLike, params: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer | None = None) -> dict:
    """Load what :func:`save_checkpoint` wrote into ``params`` (in place) and ``optimizer``; returns the state dict.

    Raises:
        FileNotFoundError: no checkpoint in ``directory``.
        ValueError: the checkpoint's parameter names differ from ``params``.
    """
    from hf_ext.utils.saving import verify_manifest

    src = Path(directory)
    if not (src / "trainable.safetensors").is_file():
        raise FileNotFoundError(f"no checkpoint (trainable.safetensors) in {src}")
    verify_manifest(src)
    tensors = load_safetensors(src / "trainable.safetensors")
    if set(tensors) != set(params):
        missing, extra = sorted(set(params) - set(tensors))[:3], sorted(set(tensors) - set(params))[:3]
        raise ValueError(f"checkpoint parameters do not match the model: missing {missing}, unexpected {extra}")
    from ...core.sharding import shard_like

    with torch.no_grad():
        for n, p in params.items():
            p.copy_(shard_like(tensors[n], p))  # a DTensor parameter receives its own shard
    if optimizer is not None and (src / "optimizer.json").is_file():
        meta = read_json(src / "optimizer.json", required=("state", "param_groups"))
        opt_t = load_safetensors(src / "optimizer.safetensors")
        ordered = [p for group in optimizer.param_groups for p in group["params"]]
        state = {}
        for pid, st in meta["state"].items():
            param = ordered[int(pid)] if int(pid) < len(ordered) else None
            state[int(pid)] = {}
            for k, v in st.items():
                value = opt_t[f"{pid}.{k}"] if v == "__tensor__" else v
                if param is not None and torch.is_tensor(value) and tuple(value.shape) == tuple(param.shape):
                    value = shard_like(value, param)  # moments of a sharded parameter are sharded like it
                state[int(pid)][k] = value
        optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    return read_json(src / "training_state.json", what="the training state (training_state.json)")


def gather_for_checkpoint(params: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer | None
                          ) -> tuple[dict[str, torch.Tensor], dict | None]:
    """Full tensors of sharded ``params`` and ``optimizer`` state, for :func:`save_checkpoint` (a collective: every
    process calls it; unsharded inputs come back as CPU copies)."""
    from ...core.sharding import gather_full_tensors

    full = gather_full_tensors(params)
    if optimizer is None:
        return full, None
    sd = optimizer.state_dict()
    state = {pid: gather_full_tensors(dict(sorted(st.items()))) for pid, st in sorted(sd["state"].items())}
    return full, {"state": state, "param_groups": sd["param_groups"]}


def write_checkpoint(acc: Accelerator, directory: str | os.PathLike, params: dict[str, torch.Tensor],
                     optimizer: torch.optim.Optimizer | None, state: dict, sharded: bool) -> None:
    """Save a checkpoint from a run of ``acc.num_processes`` processes (gathering sharded tensors first); the main
    process writes it, the others wait.

    Args:
        acc: the run's ``accelerate.Accelerator``.
        directory, params, optimizer, state: as :func:`save_checkpoint`.
        sharded: whether ``params``/``optimizer`` are FSDP2-sharded (then gathered first, on every process).
    """
    if sharded:
        params, optimizer = gather_for_checkpoint(params, optimizer)
    if acc.is_main_process:
        save_checkpoint(directory, params, optimizer, state)
    acc.wait_for_everyone()
