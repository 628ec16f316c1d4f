"""The MAD benchmark runner: every (setting x lr x wd) job as an independent tiny training run.

``run_benchmark(arch, protocol="madlab", preset="lite")`` builds the job list (the 66 settings of
:func:`~hf_ext.mad.config.benchmark_grid` x the architecture's LR grid x wd in {0, 0.1}; ``lite``: the 6 baselines, one
LR, wd 0, 20 epochs), skips jobs already in the output folder (resumable), splits the rest over Accelerate processes
(``hf-ext mad run``, or ``accelerate launch -m hf_ext mad run ...``; no DDP inside a run, runs are tiny), and appends
one JSON row per job to ``rows-<rank>.jsonl``; the main process merges them into ``results.parquet`` and
``results.json``. :func:`hf_ext.mad.report.mad_report` turns them into the per-task table and plots.

Protocols:

``madlab`` (reproduces mad-lab's hidden details)
    AdamW over all parameters (torch default betas, wd on everything), cosine schedule stepped per epoch to 1e-6,
    test set evaluated every epoch, reported ``test_acc`` = macro accuracy of the epoch with the **lowest test
    perplexity**, training **stops once test accuracy >= 0.999**.
``clean``
    10% of the train split held out for selection (best validation accuracy; early stop on validation), test reported
    once for the selected epoch with micro and macro accuracy, no weight decay on biases/norms/embeddings.

Example:
    >>> from hf_ext.mad.bench import run_benchmark
    >>> rows = run_benchmark("mA Sg mA Sg", preset="lite", tasks=["CR"], hidden_size=32, epochs=2,
    ...                      overrides={"num_train_examples": 256, "num_test_examples": 64}, out_dir="mad_run")
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hf_ext.utils.logging import get_logger

from .config import MAD_TASKS, MADTaskConfig, baseline, benchmark_grid, resolve_task

if TYPE_CHECKING:
    from torch import nn

logger = get_logger(__name__)

#: mad-lab's grid; u-μP's optimum is O(1) (Blake et al. 2025), so it gets its own grid.
LR_GRIDS: dict[str, list[float]] = {"default": [1e-4, 5e-4, 1e-3], "umup": [0.25, 0.5, 1.0, 2.0]}
WD_GRID: list[float] = [0.0, 0.1]
LITE_LR: dict[str, float] = {"default": 5e-4, "umup": 1.0}
PROTOCOLS = ("madlab", "clean")
PRESETS = ("lite", "full")

OptimizerFactory = Callable[[Any, float, float], Any]


def arch_family(arch: str) -> str:
    """``"umup"`` for u-μP architectures, ``"default"`` otherwise (selects the LR grid)."""
    return "umup" if arch.lower().replace("-", "").startswith("umup") else "default"


# ------------------------------------------------------------------------------------------------------ models
def make_model(arch: str, cfg: MADTaskConfig, hidden_size: int = 128, num_layers: int = 4, num_heads: int | None = None,
               seed: int = 0) -> nn.Module:
    """Build the model for ``arch`` on task setting ``cfg`` (vocab ``cfg.vocab_size``, length ``cfg.output_length``).

    ``arch`` is one of:

    - a MADStack layer pattern (``"mh-attention,swiglu,mh-attention,swiglu"``, ``"mH Sg mA Sg"``, see
      :func:`~hf_ext.mad.models.parse_layers`);
    - ``"hf:<model_type>"`` (e.g. ``hf:llama``, ``hf:gpt2``, ``hf:mamba``, ``hf:qwen2``): a transformers causal LM
      config of that type with ``hidden_size``/``num_layers``/``num_heads`` and the task vocab;
    - ``"umup"``: hf_ext's u-μP Llama (:mod:`hf_ext.umup`), through ``AutoModelForCausalLM``;
    - a local folder with a ``config.json`` of any causal LM (its vocab and positions are set to the task's).

    For the compression task the backbone is wrapped in the autoencoder (:class:`~hf_ext.mad.models.MADAutoEncoder`
    or :class:`~hf_ext.mad.models.CausalLMAutoEncoder`), as mad-lab's ``train.py`` forces.

    Raises:
        ValueError: unknown arch or a layer pattern error (naming the valid layers).
    """
    import torch

    L = cfg.output_length
    V = cfg.vocab_size
    heads = num_heads or max(1, hidden_size // 8)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if arch_family(arch) == "umup":
            from transformers import AutoModelForCausalLM

            from hf_ext.umup import UMupConfig

            ucfg = UMupConfig(vocab_size=V, hidden_size=hidden_size, intermediate_size=int(8 * hidden_size / 3 + 15) // 16 * 16,
                              num_hidden_layers=max(1, num_layers // 2), num_attention_heads=heads,
                              num_key_value_heads=heads, max_position_embeddings=max(L + 1, 64))
            lm = AutoModelForCausalLM.from_config(ucfg)
        elif arch.startswith("hf:") or os.path.isdir(arch):
            lm = _hf_causal_lm(arch, V, L, hidden_size, max(1, num_layers // 2), heads)
        else:
            from .models import MADAutoEncoder, MADStackConfig, MADStackForCausalLM

            mcfg = MADStackConfig(layers=arch, hidden_size=hidden_size, vocab_size=V, max_position_embeddings=max(L, 8),
                                  num_attention_heads=min(heads, 16) if hidden_size % min(heads, 16) == 0 else 1)
            return MADAutoEncoder(mcfg) if cfg.task == "compression" else MADStackForCausalLM(mcfg)
        if cfg.task == "compression":
            from .models import CausalLMAutoEncoder

            return CausalLMAutoEncoder(lm, vocab_size=V, max_length=max(L, 8))
        return lm


def _hf_causal_lm(arch: str, V: int, L: int, d: int, n_layers: int, heads: int):
    from transformers import AutoConfig, AutoModelForCausalLM

    if arch.startswith("hf:"):
        model_type = arch[3:]
        try:
            from hf_ext.tiny import CAUSAL_LM_FAMILIES, tiny_causal_lm_config

            if model_type in CAUSAL_LM_FAMILIES:
                cfg = tiny_causal_lm_config(model_type, hidden_size=d, num_layers=n_layers)
            else:  # pass the sizes at construction so that derived fields (Mamba's inner size, dt rank) follow
                cfg = AutoConfig.for_model(model_type, **_size_kwargs(model_type, V, L, d, n_layers, heads))
        except (ValueError, KeyError) as err:
            raise ValueError(f"unknown transformers model type {model_type!r} in arch {arch!r}: {err}") from None
        for key in ("hidden_size", "n_embd"):
            if hasattr(cfg, key):
                setattr(cfg, key, d)
        for key in ("num_hidden_layers", "n_layer"):
            if hasattr(cfg, key):
                setattr(cfg, key, n_layers)
    else:
        cfg = AutoConfig.from_pretrained(arch)
    cfg.vocab_size = V
    for key in ("max_position_embeddings", "n_positions"):
        if hasattr(cfg, key) and getattr(cfg, key) is not None and getattr(cfg, key) < L + 1:
            setattr(cfg, key, L + 1)
    for key in ("bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id"):
        if getattr(cfg, key, None) is not None and getattr(cfg, key) >= V:
            setattr(cfg, key, 0)
    return AutoModelForCausalLM.from_config(cfg)


def _size_kwargs(model_type: str, V: int, L: int, d: int, n_layers: int, heads: int) -> dict:
    """Size fields accepted by ``model_type``'s config class (names differ across families)."""
    import dataclasses
    import inspect

    from transformers import CONFIG_MAPPING

    cls = CONFIG_MAPPING[model_type]
    names = set(inspect.signature(cls.__init__).parameters)
    if dataclasses.is_dataclass(cls):
        names |= {f.name for f in dataclasses.fields(cls)}
    wanted = [(("hidden_size", "n_embd", "d_model"), d), (("num_hidden_layers", "n_layer", "num_layers"), n_layers),
              (("num_attention_heads", "n_head"), heads), (("num_key_value_heads",), heads),
              (("intermediate_size", "n_inner", "ffn_dim"), 4 * d), (("vocab_size",), V),
              (("max_position_embeddings", "n_positions"), max(L + 1, 64))]
    out = {}
    for keys, value in wanted:
        for key in keys:
            if key in names:
                out[key] = value
                break
    if model_type == "mamba":
        out.pop("intermediate_size", None)  # derived from expand * hidden_size
    return out


def default_optimizer_factory(arch: str, protocol: str) -> OptimizerFactory:
    """mad-lab: ``AdamW(model.parameters(), lr, weight_decay)`` (wd on all parameters); ``clean``: no wd on biases,
    norms and embeddings; u-μP: :func:`hf_ext.umup.umup_param_groups` (per-tensor LRs, independent wd)."""
    import torch

    if arch_family(arch) == "umup":
        def umup_factory(model, lr, wd):
            from hf_ext.umup import umup_param_groups

            return torch.optim.AdamW(umup_param_groups(_inner(model), lr=lr, weight_decay=wd,
                                                       allow_non_unit_scaling_params=True))

        return umup_factory
    if protocol == "madlab":
        return lambda model, lr, wd: torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=wd)

    def clean_factory(model, lr, wd):
        decay, no_decay = [], []
        for name, p in model.named_parameters():
            if not p.requires_grad:
                continue
            (no_decay if p.ndim < 2 or "embed" in name or "norm" in name else decay).append(p)
        return torch.optim.AdamW([{"params": decay, "weight_decay": wd}, {"params": no_decay, "weight_decay": 0.0}], lr=lr)

    return clean_factory


def _inner(model):
    return getattr(model, "lm", model)


def _uses_model_loss(model) -> bool:
    cfg = getattr(_inner(model), "config", None)
    return model is _inner(model) and str(getattr(cfg, "model_type", "")).startswith("umup")


def forward_loss(model, x, y):
    """``(loss, logits)`` with position-aligned targets ``y``.

    MAD models and transformers models: CE of the logits outside the model. u-μP (whose forward shifts ``labels``
    and scales the loss gradient): a dummy token is appended and ``labels = [-100, y]`` so that its own loss sees
    ``logits[t]`` vs ``y[t]``.
    """
    import torch

    from .models import aligned_cross_entropy

    if _uses_model_loss(model):
        xp = torch.cat([x, torch.zeros_like(x[:, :1])], dim=1)
        lab = torch.cat([torch.full_like(y[:, :1], -100), y], dim=1)
        out = model(input_ids=xp, labels=lab)
        return out.loss, out.logits[:, :-1]
    out = model(input_ids=x)
    logits = out.logits if hasattr(out, "logits") else out
    return aligned_cross_entropy(logits, y), logits


# ---------------------------------------------------------------------------------------------------- training
@dataclass
class TrainResult:
    test_acc: float
    test_acc_micro: float
    test_ppl: float
    test_loss: float
    train_acc: float
    train_loss: float
    train_ppl: float
    best_epoch: int
    epochs_run: int
    steps: int
    stopped_early: bool
    history: list


def _evaluate(model, x, y, batch_size, device, V, amp) -> dict[str, float]:
    import torch

    from .metrics import mad_accuracy

    model.eval()
    preds, tot, n = [], 0.0, 0
    with torch.no_grad(), amp():
        for s in range(0, len(x), batch_size):
            xb, yb = x[s:s + batch_size].to(device), y[s:s + batch_size].to(device)
            loss, logits = forward_loss(model, xb, yb)
            k = int((yb != -100).sum())
            tot += float(loss) * k
            n += k
            preds.append(logits.argmax(-1).cpu())
    model.train()
    p = torch.cat(preds).numpy()
    mean = tot / max(n, 1)
    return {"acc": mad_accuracy(p, y.numpy(), "macro", num_classes=V),
            "acc_micro": mad_accuracy(p, y.numpy(), "micro", num_classes=V), "loss": mean,
            "ppl": math.exp(min(mean, 50.0))}


def train_run(model: nn.Module, cfg: MADTaskConfig, data: dict, lr: float, weight_decay: float, epochs: int,
              protocol: str = "madlab", batch_size: int = 128, optimizer_factory: OptimizerFactory | None = None,
              min_lr: float = 1e-6, early_stop_acc: float = 0.999, max_steps: int | None = None, device: str = "cpu",
              seed: int = 0, precision: str = "fp32", progress: bool = False) -> TrainResult:
    """Train ``model`` on ``data`` (``{"train": (x, y), "test": (x, y)}`` numpy arrays) under ``protocol``.

    See the module docstring for the two protocols. ``max_steps`` caps the optimiser steps (the cosine schedule still
    spans ``epochs``). ``precision``: ``"fp32"`` or ``"bf16"`` (autocast, as mad-lab's bf16-mixed).
    """
    import contextlib

    import numpy as np
    import torch

    from hf_ext.utils.progress import progress_bar

    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; expected one of {list(PROTOCOLS)}")
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision must be 'fp32' or 'bf16', got {precision!r}")
    dev_type = torch.device(device).type

    def amp():
        return torch.autocast(dev_type, dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()

    xtr, ytr = (torch.as_tensor(np.asarray(a), dtype=torch.long) for a in data["train"])
    xte, yte = (torch.as_tensor(np.asarray(a), dtype=torch.long) for a in data["test"])
    gen = torch.Generator().manual_seed(seed)
    if protocol == "clean":  # hold out 10% of train for selection
        perm = torch.randperm(len(xtr), generator=gen)
        n_val = max(1, len(xtr) // 10)
        xva, yva = xtr[perm[:n_val]], ytr[perm[:n_val]]
        xtr, ytr = xtr[perm[n_val:]], ytr[perm[n_val:]]
    model.to(device).train()
    opt = (optimizer_factory or default_optimizer_factory("", protocol))(model, lr, weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs, eta_min=min_lr)
    V = cfg.vocab_size
    best = None
    history = []
    steps = 0
    stopped = False
    bar = progress_bar(total=epochs, desc=f"{cfg.name} lr={lr:g} wd={weight_decay:g}", enabled=progress, leave=False)
    for epoch in range(epochs):
        perm = torch.randperm(len(xtr), generator=gen)
        tl, tn = 0.0, 0
        for s in range(0, len(xtr), batch_size):
            idx = perm[s:s + batch_size]
            xb, yb = xtr[idx].to(device), ytr[idx].to(device)
            with amp():
                loss, _ = forward_loss(model, xb, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            steps += 1
            tl += float(loss.detach()) * len(idx)
            tn += len(idx)
            if max_steps is not None and steps >= max_steps:
                break
        sched.step()
        test = _evaluate(model, xte, yte, 4 * batch_size, device, V, amp)
        rec = {"epoch": epoch, "train_loss": tl / max(tn, 1), "test_acc": test["acc"], "test_acc_micro": test["acc_micro"],
               "test_loss": test["loss"], "test_ppl": test["ppl"]}
        if protocol == "madlab":
            key = test["ppl"]  # mad-lab: ModelCheckpoint(monitor test perplexity, mode min) -> validate(ckpt="best")
            better = best is None or key < best[0]
            stop_metric = test["acc"]  # EarlyStopping(test accuracy, stopping_threshold=0.999)
        else:
            val = _evaluate(model, xva, yva, 4 * batch_size, device, V, amp)
            rec.update(val_acc=val["acc"], val_loss=val["loss"])
            key = -val["acc"]
            better = best is None or key < best[0]
            stop_metric = val["acc"]
        history.append(rec)
        if better:
            best = (key, epoch, test)
        bar.update(1)
        bar.set_postfix(test_acc=f"{test['acc']:.3f}")
        if stop_metric >= early_stop_acc or (max_steps is not None and steps >= max_steps):
            stopped = stop_metric >= early_stop_acc
            break
    bar.close()
    train = _evaluate(model, xtr, ytr, 4 * batch_size, device, V, amp)
    _, best_epoch, bt = best
    return TrainResult(test_acc=bt["acc"], test_acc_micro=bt["acc_micro"], test_ppl=bt["ppl"], test_loss=bt["loss"],
                       train_acc=train["acc"], train_loss=train["loss"], train_ppl=train["ppl"], best_epoch=best_epoch,
                       epochs_run=len(history), steps=steps, stopped_early=stopped, history=history)


# ------------------------------------------------------------------------------------------------------ runner
@dataclass(frozen=True)
class Job:
    arch: str
    protocol: str
    setting: MADTaskConfig
    lr: float
    weight_decay: float
    epochs: int

    @property
    def job_id(self) -> str:
        return f"{self.arch}|{self.protocol}|{self.setting.name}|lr={self.lr:g}|wd={self.weight_decay:g}|e={self.epochs}"


def make_jobs(arch: str, protocol: str = "madlab", preset: str = "lite", tasks: Sequence[str] | None = None,
              lrs: Sequence[float] | None = None, wds: Sequence[float] | None = None, epochs: int | None = None,
              overrides: dict[str, Any] | None = None) -> list[Job]:
    """The job list: ``full`` = 66 settings x LR grid x {0, 0.1} (396 for the default grid), 200 epochs; ``lite`` =
    the 6 baselines x one LR x wd 0, 20 epochs. ``overrides`` (mad-lab setting names) apply to every setting."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; expected one of {list(PROTOCOLS)}")
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; expected one of {list(PRESETS)}")
    fam = arch_family(arch)
    overrides = dict(overrides or {})
    wanted = None if tasks is None else [resolve_task(t) for t in tasks]
    if preset == "full":
        settings = benchmark_grid(wanted, **overrides)
        lrs = list(lrs or LR_GRIDS[fam])
        wds = list(WD_GRID if wds is None else wds)
        epochs = epochs or 200
    else:
        settings = [baseline(t, **overrides) for t in (wanted or MAD_TASKS)]
        lrs = list(lrs or [LITE_LR[fam]])
        wds = list([0.0] if wds is None else wds)
        epochs = epochs or 20
    return [Job(arch, protocol, s, lr, wd, epochs) for s in settings for lr in lrs for wd in wds]


def _read_rows(out: Path) -> list[dict]:
    rows = []
    for f in sorted(out.glob("rows-*.jsonl")):
        for line in f.read_text(encoding="utf-8").splitlines():
            if line.strip():
                rows.append(json.loads(line))
    return rows


def run_benchmark(arch: str, protocol: str = "madlab", preset: str = "lite", out_dir: str | Path = "mad_results",
                  tasks: Sequence[str] | None = None, lrs: Sequence[float] | None = None,
                  wds: Sequence[float] | None = None, epochs: int | None = None, hidden_size: int = 128,
                  num_layers: int = 4, num_heads: int | None = None, batch_size: int = 128,
                  max_steps: int | None = None, overrides: dict[str, Any] | None = None,
                  optimizer_factory: OptimizerFactory | None = None, seed: int = 0, precision: str = "fp32",
                  progress: bool = True, resume: bool = True) -> list[dict]:
    """Run (or resume) the MAD benchmark of ``arch``; returns all rows (this and earlier runs in ``out_dir``).

    Args:
        arch: see :func:`make_model`.
        protocol: ``"madlab"`` or ``"clean"``. preset: ``"lite"`` or ``"full"`` (see :func:`make_jobs`).
        out_dir: results folder (``rows-<rank>.jsonl``, ``results.parquet``, ``results.json``).
        tasks, lrs, wds, epochs, overrides: restrict/override the job list.
        hidden_size, num_layers, num_heads: model size (mad-lab: 128, 4 layers = 2 blocks).
        batch_size: 128 as mad-lab. max_steps: cap optimiser steps per job (smoke runs).
        optimizer_factory: ``f(model, lr, wd) -> optimizer``; default :func:`default_optimizer_factory`.
        seed: model init and data order seed. precision: ``"fp32"`` or ``"bf16"``.
        progress: tqdm bars. resume: skip jobs whose ``job_id`` is already in ``out_dir``.

    Each process of an ``accelerate launch`` takes its slice of the pending jobs
    (``PartialState().split_between_processes``) on its own device.
    """
    import torch
    from accelerate import PartialState

    from hf_ext.utils.progress import progress_bar

    from .generators import generate_splits

    # cpu=True on a CPU-only machine: without it PartialState ignores a torchrun launch (every process believes it is
    # alone and runs every job)
    state = PartialState(cpu=not torch.cuda.is_available())
    out = Path(out_dir)
    jobs = make_jobs(arch, protocol, preset, tasks, lrs, wds, epochs, overrides)
    if jobs:  # a bad arch / size fails here, before the results folder is created
        make_model(arch, jobs[0].setting, hidden_size, num_layers, num_heads, seed=seed)
    out.mkdir(parents=True, exist_ok=True)
    done = {r["job_id"] for r in _read_rows(out)} if resume else set()
    pending = [j for j in jobs if j.job_id not in done]
    factory = optimizer_factory or default_optimizer_factory(arch, protocol)
    rows_file = out / f"rows-{state.process_index}.jsonl"
    data_cache: dict[str, dict] = {}
    with state.split_between_processes(pending) as mine:
        for job in progress_bar(mine, desc=f"MAD {arch} ({protocol}, rank {state.process_index})",
                                enabled=progress and state.is_local_main_process):
            t0 = time.perf_counter()
            if job.setting.name not in data_cache:
                data_cache.clear()
                data_cache[job.setting.name] = generate_splits(job.setting)
            model = make_model(arch, job.setting, hidden_size, num_layers, num_heads, seed=seed)
            res = train_run(model, job.setting, data_cache[job.setting.name], job.lr, job.weight_decay, job.epochs,
                            protocol=protocol, batch_size=batch_size, optimizer_factory=factory, max_steps=max_steps,
                            device=str(state.device), seed=seed, precision=precision, progress=False)
            s = job.setting
            row = {"job_id": job.job_id, "arch": arch, "protocol": protocol, "task": s.task, "setting": s.name,
                   "madlab_path": s.madlab_path, "vocab_size": s.vocab_size, "seq_len": s.seq_len,
                   "num_train_examples": s.num_train_examples, "frac_noise": s.frac_noise,
                   "num_tokens_to_copy": s.num_tokens_to_copy, "lr": job.lr, "weight_decay": job.weight_decay,
                   "epochs": job.epochs, "test_acc": res.test_acc, "test_acc_micro": res.test_acc_micro,
                   "test_ppl": res.test_ppl, "test_loss": res.test_loss, "train_acc": res.train_acc,
                   "train_loss": res.train_loss, "train_ppl": res.train_ppl, "best_epoch": res.best_epoch,
                   "epochs_run": res.epochs_run, "steps": res.steps, "stopped_early": res.stopped_early,
                   "params": sum(p.numel() for p in model.parameters()), "hidden_size": hidden_size,
                   "seed": seed, "wall_s": time.perf_counter() - t0, "config": json.dumps(s.to_dict())}
            with rows_file.open("a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")
    state.wait_for_everyone()
    rows = _read_rows(out)
    if state.is_main_process:
        import pandas as pd

        from hf_ext.utils.saving import atomic_file, atomic_write_text

        df = pd.DataFrame(rows)
        with atomic_file(out / "results.parquet") as tmp:  # a reader sees the old table or the new one
            df.to_parquet(tmp, index=False)
        atomic_write_text(out / "results.json", json.dumps(rows, indent=1))
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    """Deprecated (removed in 0.3): ``python -m hf_ext.mad.bench ARGS`` is ``python -m hf_ext mad run ARGS``
    (``accelerate launch -m hf_ext mad run ARGS`` for several processes)."""
    import sys

    from hf_ext.cli import main as cli_main
    from hf_ext.utils.deprecation import warn_deprecated

    warn_deprecated("python -m hf_ext.mad.bench", "python -m hf_ext mad run", category=FutureWarning)
    return cli_main(["mad", "run", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())
