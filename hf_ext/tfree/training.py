"""Training T-FREE models: word-window datasets, a padding collator for ``Trainer``, and an Accelerate loop.

* :func:`word_windows` turns documents into fixed windows of ``max_words`` words of activation ids (documents
  joined with ``<|endoftext|>``), dictionary-free and deterministic;
* :class:`TFreeDataCollator` pads them to ``activation_ids`` ``[B, W, A]`` + ``attention_mask`` + ``labels`` for
  ``transformers.Trainer``;
* :func:`train_tfree` is a plain loop through ``accelerate.Accelerator`` (the same code runs on 1 or N processes,
  ``torchrun`` / ``accelerate launch``, DDP or FSDP2 sharded with :func:`~hf_ext.tfree.sharding.shard_tfree`);
  :func:`tiny_tfree` builds a seeded tiny model over any tiny backbone family.

Example:
    >>> from hf_ext.tfree.training import tiny_tfree, train_tfree
    >>> model, tok = tiny_tfree("llama", hash_vocab_size=512, num_activations=4)
    >>> losses = train_tfree(model, tok, ["the cat sat on the mat."] * 8, steps=5, max_words=8, progress=False)
    >>> len(losses)
    5
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from hf_ext.utils.logging import get_logger
from hf_ext.utils.validation import check_size

from .configuration_tfree import TFreeConfig
from .modeling_tfree import TFreeForCausalLM
from .tokenization_tfree import TFreeTokenizer

if TYPE_CHECKING:
    from accelerate import Accelerator

logger = get_logger(__name__)

__all__ = ["TFreeDataCollator", "tiny_tfree", "train_tfree", "word_windows"]


def tiny_tfree(family: str = "llama", *, hash_vocab_size: int = 1024, num_activations: int = 4,
               num_lowercase_activations: int = 0, hidden_size: int = 64, num_layers: int = 2, seed: int = 0,
               words: Sequence[str] | None = None, hash_scheme: str = "aa_md5",
               **config_kwargs: Any) -> tuple[TFreeForCausalLM, TFreeTokenizer]:
    """A seeded tiny ``TFreeForCausalLM`` over a tiny backbone of ``family`` and its matching tokenizer.

    Args:
        family: one of ``hf_ext.testing.CAUSAL_LM_FAMILIES`` (llama, gpt2, gpt_neox, qwen2, opt).
        hash_vocab_size, num_activations, num_lowercase_activations, hash_scheme: hashing (see :class:`TFreeConfig`).
        hidden_size, num_layers: backbone size.
        seed: weights are a function of the seed.
        words: extra dictionary words for the tokenizer (the decode dictionary is set from the tokenizer).
        **config_kwargs: more :class:`TFreeConfig` fields (pos_weight, loss_scale, decode_variant …).

    Returns:
        ``(model, tokenizer)``, the model in eval mode with its decode dictionary set.
    """
    from hf_ext.tiny import tiny_causal_lm_config

    text_config = tiny_causal_lm_config(family, hidden_size=hidden_size, num_layers=num_layers,
                                        max_position_embeddings=512) if family != "gpt2" else \
        tiny_causal_lm_config(family, hidden_size=hidden_size, num_layers=num_layers, n_positions=512)
    cfg = TFreeConfig(text_config=text_config, hash_vocab_size=hash_vocab_size, num_activations=num_activations,
                      num_lowercase_activations=num_lowercase_activations, hash_scheme=hash_scheme, **config_kwargs)
    tok = TFreeTokenizer(words=words, hash_vocab_size=hash_vocab_size, num_activations=num_activations,
                         num_lowercase_activations=num_lowercase_activations, hash_scheme=hash_scheme)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = TFreeForCausalLM(cfg)
    model.set_decode_dictionary(tok)
    return model.eval(), tok


def word_windows(tokenizer: TFreeTokenizer, texts: Sequence[str], max_words: int, *,
                 stride: int | None = None) -> list[dict[str, list[list[int]]]]:
    """Documents → windows of ``max_words`` words (activation-id lists), documents separated by ``<|endoftext|>``.

    Args:
        tokenizer: the T-FREE tokenizer (only its hashing is used: no dictionary involved).
        texts: documents.
        max_words: window length in words (≥ 2).
        stride: step between window starts (default ``max_words``: no overlap).

    Returns:
        A list of examples ``{"activation_ids": [per-word id lists]}`` (ready for :class:`TFreeDataCollator` and
        ``datasets.Dataset.from_list``).
    """
    check_size("max_words", max_words, min=2)
    stride = stride or max_words
    enc = tokenizer.encode_activations(list(texts), format="flat", add_eos_token=True)
    words = [w for doc in enc["activation_ids"] for w in doc]
    if len(words) < 2:
        raise ValueError("the texts give fewer than 2 words; nothing to train on")
    last = max(len(words) - max_words, 0)
    return [{"activation_ids": words[s: s + max_words]} for s in range(0, last + 1, stride)]


class TFreeDataCollator:
    """Pads examples ``{"activation_ids": [[ids of word 0], [ids of word 1], …]}`` for ``Trainer``.

    Returns ``activation_ids`` ``[B, W, A]`` (``-1`` padded, right padding), ``attention_mask`` ``[B, W]`` and
    ``labels`` (a copy of the activation ids: the model shifts them).

    Example:
        >>> batch = TFreeDataCollator()([{"activation_ids": [[1, 2], [3]]}, {"activation_ids": [[4]]}])
        >>> batch["activation_ids"].shape, batch["attention_mask"].tolist()
        (torch.Size([2, 2, 2]), [[1, 1], [1, 0]])
    """

    def __init__(self, max_words: int | None = None):
        self.max_words = max_words

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        if not features:
            raise ValueError("TFreeDataCollator got an empty batch")
        docs = []
        for f in features:
            if not isinstance(f, dict) or "activation_ids" not in f:
                raise ValueError(f"each example needs 'activation_ids' (per-word id lists); got {type(f).__name__}")
            doc = f["activation_ids"]
            docs.append(doc[: self.max_words] if self.max_words else doc)
        B = len(docs)
        W = max(len(d) for d in docs)
        A = max((len(w) for d in docs for w in d), default=1)
        act = torch.full((B, W, A), -1, dtype=torch.long)
        mask = torch.zeros(B, W, dtype=torch.long)
        for b, doc in enumerate(docs):
            for p, ids in enumerate(doc):
                act[b, p, : len(ids)] = torch.as_tensor(ids, dtype=torch.long)
            mask[b, : len(doc)] = 1
        return {"activation_ids": act, "attention_mask": mask, "labels": act.clone()}


def train_tfree(model: TFreeForCausalLM, tokenizer: TFreeTokenizer, texts: Sequence[str], *, steps: int = 100,
                batch_size: int = 8, max_words: int = 32, lr: float = 3e-3, weight_decay: float = 0.0,
                warmup_steps: int = 0, seed: int = 0, progress: bool = True, accelerator: Accelerator | None = None,
                log_every: int = 0, fsdp: bool = False) -> list[float]:
    """Train ``model`` on ``texts`` with AdamW (cosine schedule) through Accelerate; returns the per-step losses.

    The loop runs unchanged on N processes (``torchrun`` / ``accelerate launch``): every process draws the same global
    batch of ``batch_size`` windows (a seeded shuffle) and takes its contiguous share, and the gradients are averaged
    (DDP, or FSDP2's reduce-scatter when sharded). Windows hold ``max_words`` words each, so every share has as many
    positions and N processes make the same updates as one, up to float rounding.

    Args:
        model, tokenizer: a T-FREE model and a tokenizer with the same hashing (every process: same initial weights).
        texts: training documents.
        steps, max_words, lr, weight_decay, warmup_steps: optimisation settings.
        batch_size: the **global** batch in windows (split across processes; divisible by their number).
        seed: data order seed.
        progress: show a tqdm bar.
        accelerator: an ``accelerate.Accelerator`` (default: a new one, CPU if no GPU).
        log_every: log the loss every ``n`` steps (0 = never).
        fsdp: shard with FSDP2 (:func:`~hf_ext.tfree.sharding.shard_tfree`) even without an Accelerate FSDP2 launch;
            the model then stays sharded (save it via :func:`hf_ext.core.sharding.unsharded_copy` on every process).

    Returns:
        The global mean loss of every step.

    Raises:
        ValueError: mismatched hashing, a non-positive ``steps``, or ``batch_size`` not divisible by the processes.
    """
    from accelerate import Accelerator

    from hf_ext.utils.progress import progress_bar

    from ..core.sharding import sharding_kwargs
    from .sharding import shard_tfree

    if tokenizer.hash_config() != model.config.hash_config():
        raise ValueError(f"tokenizer hashing {tokenizer.hash_config()} != model {model.config.hash_config()}")
    check_size("steps", steps)
    windows = word_windows(tokenizer, texts, max_words)
    accelerator = accelerator or Accelerator(cpu=not torch.cuda.is_available())
    world, rank = accelerator.num_processes, accelerator.process_index
    if batch_size % world:
        raise ValueError(f"batch_size={batch_size} (global) is not divisible by the {world} processes")
    gen = torch.Generator().manual_seed(seed)
    # Not prepared by Accelerate: every process iterates the same global batches and slices its share below.
    loader = torch.utils.data.DataLoader(windows, batch_size=batch_size, shuffle=True, generator=gen,
                                         collate_fn=TFreeDataCollator(), drop_last=len(windows) > batch_size)

    def schedule(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step - warmup_steps) / max(1, steps - warmup_steps)))

    model.train()
    shard = sharding_kwargs(accelerator, fsdp)
    if shard is not None:
        trained = shard_tfree(model, device=accelerator.device, **shard)
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay, betas=(0.9, 0.95))
    else:
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay, betas=(0.9, 0.95))
        trained, opt = accelerator.prepare(model, opt)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    losses: list[float] = []
    bar = progress_bar(total=steps, desc="T-FREE training", enabled=progress and accelerator.is_local_main_process)
    while len(losses) < steps:
        for batch in loader:
            n = batch["activation_ids"].shape[0]
            if n < world:
                raise ValueError(f"a batch of {n} windows cannot be split across {world} processes; give more text")
            lo, hi = rank * n // world, (rank + 1) * n // world
            local = {k: v[lo:hi].to(accelerator.device) for k, v in batch.items()}
            loss = trained(**local).loss
            accelerator.backward(loss)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            losses.append(float(accelerator.reduce(loss.detach(), reduction="mean")) if world > 1 else loss.item())
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
            if log_every and len(losses) % log_every == 0:
                logger.info("step %d loss %.4f", len(losses), losses[-1])
            if len(losses) >= steps:
                break
    bar.close()
    model.eval()
    return losses


def stdlib_corpus(max_docs: int | None = None, *, max_chars: int | None = None) -> list[str]:
    """English prose shipped with Python itself: the help topics of ``pydoc_data.topics`` (offline, licence: PSF).

    Args:
        max_docs: keep the first ``n`` topics (sorted by name).
        max_chars: truncate every topic to this many characters.

    Example:
        >>> docs = stdlib_corpus(3, max_chars=200)
        >>> len(docs), all(len(d) <= 200 for d in docs)
        (3, True)
    """
    from pydoc_data.topics import topics

    docs = [topics[k].strip() for k in sorted(topics)]
    docs = [d[:max_chars] if max_chars else d for d in docs if d]
    return docs[:max_docs] if max_docs else docs


def plot_losses(losses: Sequence[float], path, *, title: str = "T-FREE training loss"):
    """Write a PNG of the loss curve (needs matplotlib: ``pip install 'hf-ext[plots]'``); returns the path."""
    from pathlib import Path

    from hf_ext.utils.imports import require

    plt = require("matplotlib.pyplot")
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.plot(range(1, len(losses) + 1), losses)
    ax.set_xlabel("step")
    ax.set_ylabel("sparse BCE loss (× loss_scale)")
    ax.set_yscale("log")
    ax.set_title(title, fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
