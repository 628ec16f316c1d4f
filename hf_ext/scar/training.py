"""SCAR training: activation caching into ``datasets``, ``transformers.Trainer`` on cached activations or end to end
on text, and a plain Accelerate loop that runs unchanged on 1 or N processes.

* :func:`build_activation_dataset`: run the base model up to the hooked site and store one row per token
  (``activations`` ``[D]`` float32/float16, ``labels`` ``[C]``, ``sequence_id``); a sequence's labels are copied to its
  tokens and tokens from the first EOS on are dropped (spec §4, as the reference's ``ActivationsDataset``).
* :func:`train_scar`: :class:`ScarTrainer` (a ``transformers.Trainer``) on such a dataset. Loss
  ``NMSE + bce_weight · BCE`` with the positive-token gradient multiplier ``pos_grad_scale`` (see
  :meth:`ScarAdapter.forward`). Defaults follow the reference (Adam, lr 1e-5, batch 2048 tokens, grad clip 1.0).
* :func:`train_scar_end_to_end`: the same through ``Trainer`` on tokenized text (activations computed on the fly,
  no dump), via :class:`ScarEndToEnd`.
* :func:`accelerate_train` (on the command line ``hf-ext scar train-activations``): an Accelerate loop on saved
  activations (or seeded synthetic ones). Batches are split across processes, so 1 process and N processes
  (``torchrun``/``accelerate launch -m hf_ext.cli scar train-activations``) produce the same weights up to float
  reduction order.

Example:
    >>> from hf_ext.testing import tiny_causal_lm, tiny_tokenizer
    >>> model, tok = tiny_causal_lm("llama"), tiny_tokenizer()
    >>> scar = ScarAdapter.for_model(model, layer=1, concepts=["x"]).attach(model)
    >>> ds = build_activation_dataset(model, tok, ["a b c", "x y z"], [0, 1], adapter=scar, progress=False)
    >>> ds.column_names
    ['activations', 'labels', 'sequence_id']
    >>> scar, log = train_scar(scar, ds, epochs=2, batch_size=8, lr=1e-3, progress=False)
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from transformers import Trainer
from transformers.trainer_callback import PrinterCallback, ProgressCallback

from hf_ext.utils.logging import get_logger

from ..core.inputs import prepare_batch, tokenize_left_padded
from .modeling_scar import ScarAdapter

if TYPE_CHECKING:
    import datasets
    from transformers import PreTrainedTokenizerBase

    from .activation_store import ActivationStore
    from .sae import ScarOutput

logger = get_logger(__name__)

__all__ = ["ScarEndToEnd", "ScarTrainer", "build_activation_dataset", "main", "train_scar", "train_scar_end_to_end"]

_STORAGE = {"float32": torch.float32, "float16": torch.float16}


def _labels_matrix(labels: Any, n: int, num_concepts: int) -> torch.Tensor:
    y = torch.as_tensor(labels, dtype=torch.float32)
    if y.dim() == 1:
        y = y[:, None]
    if y.dim() != 2 or y.shape[0] != n or y.shape[1] != num_concepts:
        raise ValueError(f"labels must be [num_texts] or [num_texts, {num_concepts}] (one per concept), got shape "
                         f"{tuple(y.shape)} for {n} texts")
    return y


def _valid_tokens(ids: torch.Tensor, mask: torch.Tensor, eos_token_id: int | None) -> torch.Tensor:
    """``[B, T]`` bool: real tokens before the first EOS of each row (left padding allowed)."""
    valid = mask.bool()
    if eos_token_id is not None:
        is_eos = (ids == eos_token_id) & valid
        valid = valid & (is_eos.long().cumsum(-1) == 0)
    return valid


def build_activation_dataset(model: nn.Module, tokenizer: PreTrainedTokenizerBase, texts: Sequence[str],
                             labels: torch.Tensor | Sequence[float] | Sequence[Sequence[float]], *,
                             adapter: ScarAdapter | None = None, layer: int | None = None, site: str = "mlp",
                             batch_size: int = 16, max_length: int | None = None, storage_dtype: str = "float32",
                             eos_token_id: int | None = None, progress: bool = True,
                             output_dir: str | os.PathLike | None = None, shard_mb: float = 128.0,
                             overwrite: bool = False) -> datasets.Dataset | ActivationStore:
    """Cache token activations at the adapter's site, with each sequence's labels copied to its tokens.

    In memory by default; with ``output_dir`` written to disk batch by batch (sharded safetensors) and returned as a
    memory-mapped :class:`~hf_ext.scar.activation_store.ActivationStore`: same rows, same training result.

    Args:
        model: the base causal LM (``eval()`` mode).
        tokenizer: its tokenizer (padding on the left is used).
        texts: ``N`` strings.
        labels: ``N`` labels (one concept) or ``[N, C]``; ``-1`` marks "unlabelled" text that counts as negative in
            the loss, as the reference's Wikitext tokens.
        adapter: an attached :class:`ScarAdapter` (defines layer, site and ``C``); or give ``layer``/``site``.
        batch_size: texts per forward.
        max_length: truncate texts to this many tokens.
        storage_dtype: ``"float32"`` or ``"float16"`` (Arrow has no bfloat16).
        eos_token_id: tokens from the first EOS on are dropped (default ``tokenizer.eos_token_id``; with pad = eos,
            as in the reference, padding is dropped as well).
        progress: tqdm bar.
        output_dir, shard_mb, overwrite: stream into this folder, in shards of ``shard_mb`` MiB, replacing a store.

    Returns:
        ``datasets.Dataset`` with ``activations`` (``[D]`` per row), ``labels`` (``[C]``) and ``sequence_id``
        (with ``output_dir``: an ``ActivationStore``).

    Raises:
        ValueError: mismatched texts/labels, unknown storage dtype, neither adapter nor layer, an existing store.
    """
    from datasets import Array2D, Dataset, Features, Value, concatenate_datasets  # noqa: F401

    from hf_ext.utils.progress import progress_bar

    if storage_dtype not in _STORAGE:
        raise ValueError(f"storage_dtype must be one of {sorted(_STORAGE)}, got {storage_dtype!r}")
    if isinstance(texts, str) or not texts:
        raise ValueError("texts must be a non-empty list of strings")
    temporary = adapter is None
    if temporary:
        if layer is None:
            raise ValueError("pass an attached adapter=... or the layer=... (and site=...) to cache")
        num_concepts = _labels_matrix(labels, len(texts), 1 if torch.as_tensor(labels).dim() == 1
                                      else torch.as_tensor(labels).shape[1]).shape[1]
        adapter = ScarAdapter.for_model(model, layer=layer, site=site, n_latents=max(1, num_concepts),
                                        k=1, concepts=[f"c{i}" for i in range(num_concepts)]).attach(model)
    elif not adapter.is_attached:
        adapter.attach(model)
    writer = None
    try:
        y = _labels_matrix(labels, len(texts), adapter.num_concepts)
        if output_dir is not None:
            from .activation_store import ActivationWriter

            writer = ActivationWriter(output_dir, n_inputs=adapter.config.n_inputs, num_concepts=adapter.num_concepts,
                                      storage_dtype=storage_dtype, shard_mb=shard_mb, overwrite=overwrite)
        eos = eos_token_id if eos_token_id is not None else getattr(tokenizer, "eos_token_id", None)
        acts, labs, seq_ids = [], [], []
        for start in progress_bar(range(0, len(texts), batch_size), desc="caching activations", enabled=progress):
            ids, mask = tokenize_left_padded(tokenizer, texts[start:start + batch_size], max_length)
            inputs = prepare_batch(model, ids, mask)
            a = adapter.run_capture(model, inputs, activations=True).float().cpu()
            valid = _valid_tokens(ids, mask, eos)
            rows_, cols = valid.nonzero(as_tuple=True)
            if writer is not None:  # straight to disk: nothing accumulates in memory
                writer.write(a[rows_, cols], y[start + rows_], start + rows_)
                continue
            acts.append(a[rows_, cols].to(_STORAGE[storage_dtype]))
            labs.append(y[start + rows_])
            seq_ids.append(start + rows_)
        if writer is not None:
            return writer.close()
        acts_t, labs_t, seq_t = torch.cat(acts), torch.cat(labs), torch.cat(seq_ids)
    finally:
        if temporary:
            adapter.detach()
    from datasets import List

    features = Features({"activations": List(Value(storage_dtype), length=acts_t.shape[1]),
                         "labels": List(Value("float32"), length=labs_t.shape[1]), "sequence_id": Value("int64")})
    ds = Dataset.from_dict({"activations": acts_t.numpy(), "labels": labs_t.numpy(), "sequence_id": seq_t.numpy()},
                           features=features)
    return ds.with_format("torch")


class ActivationTensors(torch.utils.data.Dataset):
    """In-memory ``activations`` ``[N, D]`` / ``labels`` ``[N, C]`` with batched fetching (``__getitems__``), so a
    DataLoader builds a batch with one tensor index instead of ``batch_size`` Arrow row reads."""

    def __init__(self, activations: torch.Tensor, labels: torch.Tensor) -> None:
        self.activations, self.labels = activations.float(), labels.float()

    @classmethod
    def from_dataset(cls, dataset: Any) -> Any:
        """``dataset`` as a batch-fetching dataset: an ``ActivationStore`` stays on disk (memory-mapped), anything
        else (a ``datasets.Dataset``, a dict of columns) is loaded into memory."""
        from .activation_store import ActivationStore

        if isinstance(dataset, (ActivationTensors, ActivationStore)):
            return dataset
        columns = dataset.with_format("torch")[:] if hasattr(dataset, "with_format") else dataset
        return cls(torch.as_tensor(columns["activations"]), torch.as_tensor(columns["labels"]))

    def __len__(self) -> int:
        return self.activations.shape[0]

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"activations": self.activations[i], "labels": self.labels[i]}

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        idx = torch.as_tensor(indices)
        return {"activations": self.activations[idx], "labels": self.labels[idx]}


def _collate_activations(rows: Any) -> dict[str, torch.Tensor]:
    if isinstance(rows, dict):  # already a batch (ActivationTensors.__getitems__)
        return rows
    return {"activations": torch.stack([torch.as_tensor(r["activations"]) for r in rows]).float(),
            "labels": torch.stack([torch.as_tensor(r["labels"]) for r in rows]).float()}


class _QuietProgress(ProgressCallback):
    """The Trainer's progress bar without writing every log dict to stdout (library code does not print): the logs
    are in ``trainer.state.log_history`` (returned by :func:`train_scar`) and on the ``hf_ext`` logger at INFO."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            logger.info("SCAR training: %s", logs)


class ScarTrainer(Trainer):
    """``transformers.Trainer`` for a :class:`ScarAdapter` (on activations) or :class:`ScarEndToEnd` (on text).

    The model's forward returns the SCAR loss; ``compute_loss`` also logs its NMSE and BCE parts. Logs go to
    ``state.log_history`` and the logger, not to stdout.
    """

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.pop_callback(PrinterCallback)  # with disable_tqdm=True it prints every log dict
        if self.pop_callback(ProgressCallback) is not None:
            self.add_callback(_QuietProgress)

    def compute_loss(self, model: nn.Module, inputs: dict[str, torch.Tensor], return_outputs: bool = False,
                     num_items_in_batch: torch.Tensor | int | None = None,
                     ) -> torch.Tensor | tuple[torch.Tensor, ScarOutput]:
        """The SCAR loss of ``model(**inputs)``; while training, its NMSE and BCE parts are kept for :meth:`log`."""
        outputs = model(**inputs)
        loss = outputs["loss"]
        if model.training:
            self._scar_parts = {"nmse": float(outputs["nmse"]),
                                "bce": float(outputs["bce"]) if outputs["bce"] is not None else float("nan")}
        return (loss, outputs) if return_outputs else loss

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        """``Trainer.log`` with the last training batch's ``nmse`` and ``bce`` added to entries that carry a loss."""
        parts = getattr(self, "_scar_parts", None)
        if parts and "loss" in logs:
            logs = {**logs, **parts}
        return super().log(logs, *args, **kwargs)


def _trainer_cls():
    return ScarTrainer


def _training_args(output_dir: str | None, *, epochs: float, batch_size: int, lr: float, max_grad_norm: float,
                   seed: int, progress: bool, max_steps: int, logging_steps: int, extra: dict[str, Any]):
    import tempfile

    from transformers import TrainingArguments

    kwargs: dict[str, Any] = dict(
        output_dir=output_dir or tempfile.mkdtemp(prefix="scar-train-"), num_train_epochs=epochs,
        per_device_train_batch_size=batch_size, learning_rate=lr, max_grad_norm=max_grad_norm, seed=seed,
        data_seed=seed, optim="adamw_torch", weight_decay=0.0, adam_beta1=0.9, adam_beta2=0.999, adam_epsilon=1e-8,
        lr_scheduler_type="constant", warmup_steps=0, save_strategy="no", report_to="none",
        disable_tqdm=not progress, logging_steps=logging_steps, dataloader_num_workers=0, max_steps=max_steps,
        use_cpu=not torch.cuda.is_available(),
    )
    kwargs.update(extra)
    return TrainingArguments(**kwargs)


def train_scar(adapter: ScarAdapter, dataset: datasets.Dataset | ActivationStore, *, epochs: float = 1.0, batch_size: int = 2048, lr: float = 1e-5,
               max_grad_norm: float = 1.0, seed: int = 0, max_steps: int = -1, logging_steps: int = 50,
               output_dir: str | None = None, progress: bool = True,
               eval_dataset: datasets.Dataset | ActivationStore | None = None,
               **training_args: Any) -> tuple[ScarAdapter, list[dict[str, float]]]:
    """Train ``adapter`` on cached activations with :class:`ScarTrainer` (``transformers.Trainer``).

    Args:
        adapter: the :class:`ScarAdapter` (trained in place; may be attached).
        dataset: from :func:`build_activation_dataset` (``activations``, ``labels``): a ``datasets.Dataset`` (loaded
            into memory) or an ``ActivationStore`` (read from disk, memory-mapped, batch by batch).
        epochs, batch_size, lr, max_grad_norm: reference defaults (100 epochs in the paper; Adam(W, no decay),
            lr 1e-5, 2048 tokens, clip 1.0, constant schedule).
        seed: data order and any randomness.
        max_steps: stop after this many steps (``-1``: epochs decide).
        logging_steps: log interval (the log history is returned).
        output_dir: Trainer output folder (default: a temporary folder; no checkpoints are written).
        progress: tqdm bars.
        eval_dataset: optional held-out activations.
        **training_args: other ``TrainingArguments`` fields.

    Returns:
        ``(adapter, trainer.state.log_history)``.
    """
    cls = _trainer_cls()
    args = _training_args(output_dir, epochs=epochs, batch_size=batch_size, lr=lr, max_grad_norm=max_grad_norm,
                          seed=seed, progress=progress, max_steps=max_steps, logging_steps=logging_steps,
                          extra=training_args)
    was_training = adapter.training
    args.remove_unused_columns = False
    trainer = cls(model=adapter, args=args, train_dataset=ActivationTensors.from_dataset(dataset),
                  eval_dataset=None if eval_dataset is None else ActivationTensors.from_dataset(eval_dataset),
                  data_collator=_collate_activations)
    trainer.train()
    adapter.train(was_training)
    adapter.eval()
    return adapter, trainer.state.log_history


class ScarEndToEnd(nn.Module):
    """Frozen base model + attached adapter: ``forward(input_ids, attention_mask, labels)`` → SCAR loss on the fly.

    The base model runs without gradients up to the hooked site (the rest is skipped); the adapter's loss is
    computed on real tokens before the first EOS, with each sequence's labels copied to its tokens.

    Args:
        model: the base causal LM.
        adapter: a :class:`ScarAdapter` (attached to ``model`` here if it is not yet).
        eos_token_id: tokens from the first EOS on are dropped.
    """

    def __init__(self, model: nn.Module, adapter: ScarAdapter, eos_token_id: int | None = None) -> None:
        super().__init__()
        self.adapter = adapter
        self.config = adapter.config
        object.__setattr__(self, "base", model)  # not a submodule: never trained, never saved
        if not adapter.is_attached:
            adapter.attach(model)
        self.eos_token_id = eos_token_id

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor) -> ScarOutput:
        """The adapter's :class:`~hf_ext.scar.sae.ScarOutput` (loss included) on the valid tokens of
        ``input_ids [B, T]`` (``attention_mask [B, T]``; EOS onwards dropped), with each row's ``labels``
        (``[B]`` or ``[B, C]``) copied to its tokens."""
        inputs = prepare_batch(self.base, input_ids, attention_mask)
        acts = self.adapter.run_capture(self.base, inputs, activations=True)
        valid = _valid_tokens(input_ids, attention_mask, self.eos_token_id)
        r, c = valid.nonzero(as_tuple=True)
        y = labels.float()
        y = y[:, None] if y.dim() == 1 else y
        return self.adapter(acts[r, c], y[r])


def train_scar_end_to_end(model: nn.Module, tokenizer: PreTrainedTokenizerBase, adapter: ScarAdapter,
                          texts: Sequence[str], labels: torch.Tensor | Sequence[float] | Sequence[Sequence[float]], *,
                          epochs: float = 1.0, batch_size: int = 16, lr: float = 1e-5, max_grad_norm: float = 1.0,
                          seed: int = 0, max_steps: int = -1, max_length: int | None = None, logging_steps: int = 50,
                          output_dir: str | None = None, progress: bool = True, **training_args: Any
                          ) -> tuple[ScarAdapter, list[dict[str, float]]]:
    """Train ``adapter`` with ``Trainer`` directly on text (no activation dump): batches of ``batch_size`` texts.

    Arguments as :func:`train_scar`; ``labels`` ``[N]`` or ``[N, C]`` per text.

    Returns:
        ``(adapter, log_history)``.
    """
    from datasets import Dataset

    y = _labels_matrix(labels, len(texts), adapter.num_concepts)
    eos = getattr(tokenizer, "eos_token_id", None)
    ds = Dataset.from_dict({"text": list(texts), "labels": y.tolist()})

    def collate(rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        ids, mask = tokenize_left_padded(tokenizer, [r["text"] for r in rows], max_length)
        return {"input_ids": ids, "attention_mask": mask,
                "labels": torch.tensor([r["labels"] for r in rows], dtype=torch.float32)}

    wrapper = ScarEndToEnd(model, adapter, eos_token_id=eos)
    cls = _trainer_cls()
    args = _training_args(output_dir, epochs=epochs, batch_size=batch_size, lr=lr, max_grad_norm=max_grad_norm,
                          seed=seed, progress=progress, max_steps=max_steps, logging_steps=logging_steps,
                          extra={"remove_unused_columns": False, **training_args})
    trainer = cls(model=wrapper, args=args, train_dataset=ds, data_collator=collate)
    trainer.train()
    adapter.eval()
    return adapter, trainer.state.log_history


# ------------------------------------------------------------------------------------------------- Accelerate script


def synthetic_activations(num_tokens: int, n_inputs: int, num_concepts: int = 1, seed: int = 0):
    """A seeded toy activation dataset: Gaussian tokens plus a concept direction on positive tokens."""
    from datasets import Dataset

    g = torch.Generator().manual_seed(seed)
    y = (torch.rand(num_tokens, num_concepts, generator=g) < 0.3).float()
    directions = torch.randn(num_concepts, n_inputs, generator=g) * 3
    x = torch.randn(num_tokens, n_inputs, generator=g) + y @ directions
    return Dataset.from_dict({"activations": x.numpy(), "labels": y.numpy()}).with_format("torch")


def accelerate_train(adapter: ScarAdapter, dataset: datasets.Dataset | ActivationStore, *, epochs: int = 1, batch_size: int = 2048, lr: float = 1e-5,
                     max_grad_norm: float = 1.0, seed: int = 0, progress: bool = True, fsdp: bool = False) -> list[float]:
    """Plain Accelerate loop (Adam, grad clip, global batch ``batch_size`` split across processes).

    With ``split_batches`` every process sees its slice of the same global batch in the same order (no shuffling),
    and the gradients are averaged (DDP, or FSDP2's reduce-scatter when sharded), so N processes reproduce one process
    up to float reduction order.

    ``dataset``: a ``datasets.Dataset`` or an ``ActivationStore``. ``fsdp``: shard the (detached) adapter with FSDP2
    (:func:`~hf_ext.scar.sharding.shard_scar`) without an FSDP2 launch too; it stays sharded (save via
    ``hf_ext.core.sharding.unsharded_copy``).

    Returns:
        The global mean loss per step (on every process).
    """
    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration, set_seed
    from torch.utils.data import DataLoader

    from hf_ext.utils.progress import progress_bar

    from ..core.sharding import sharding_kwargs
    from .sharding import shard_scar

    accelerator = Accelerator(dataloader_config=DataLoaderConfiguration(split_batches=True),
                              cpu=not torch.cuda.is_available())
    set_seed(seed)
    n = len(dataset)
    if batch_size % accelerator.num_processes:
        raise ValueError(f"batch_size {batch_size} must be divisible by the {accelerator.num_processes} processes")
    loader = DataLoader(ActivationTensors.from_dataset(dataset), batch_size=batch_size, shuffle=False,
                        collate_fn=_collate_activations, drop_last=n >= batch_size)
    shard = sharding_kwargs(accelerator, fsdp)
    if shard is not None:  # sharded by hand: Accelerate would wrap the model with its own policy (or, on CPU, not)
        model = shard_scar(adapter, device=accelerator.device, **shard)
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)
        loader = accelerator.prepare(loader)
    else:
        optimizer = torch.optim.Adam(adapter.parameters(), lr=lr)
        model, optimizer, loader = accelerator.prepare(adapter, optimizer, loader)
    losses: list[float] = []
    model.train()
    for _ in range(epochs):
        for batch in progress_bar(loader, desc="scar (accelerate)", enabled=progress and accelerator.is_main_process):
            out = model(**batch)
            accelerator.backward(out["loss"])
            if max_grad_norm:  # torch's clip computes the global norm of DTensor gradients; Accelerate's handles DDP
                (torch.nn.utils.clip_grad_norm_ if shard is not None else accelerator.clip_grad_norm_)(model.parameters(), max_grad_norm)
            optimizer.step()
            optimizer.zero_grad()
            losses.append(float(accelerator.reduce(out["loss"].detach(), reduction="mean")))
    accelerator.wait_for_everyone()
    model.eval()
    return losses


def main(argv: Sequence[str] | None = None) -> int:
    """Deprecated (removed in 0.3): ``python -m hf_ext.scar.training ARGS`` is ``python -m hf_ext scar train-activations ARGS``.

    Example:
        torchrun --nproc_per_node 2 -m hf_ext.cli scar train-activations --synthetic 512 --n-inputs 16 --fsdp \\
            --out runs/scar-fsdp
    """
    from hf_ext.cli import main as cli_main
    from hf_ext.utils.deprecation import warn_deprecated

    warn_deprecated("python -m hf_ext.scar.training", "python -m hf_ext scar train-activations", category=FutureWarning)
    return cli_main(["scar", "train-activations", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
