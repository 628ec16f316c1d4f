"""A tiny causal LM trained in seconds on a seeded synthetic corpus, for the int8 coverage-curve experiment.

Random tiny models have near-flat logits, so int8 fake quantization changes nothing or flips at random; a briefly
trained model has the peaked, structured predictions on which component sensitivity differs. The corpus is a seeded
second-order Markov chain over ``vocab`` tokens with peaked (Dirichlet α ≪ 1) transitions.

Example:
    >>> model, prompts = train_toy_lm(seed=0, steps=20, progress=False)
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["markov_corpus", "train_toy_lm"]


def markov_corpus(num_seqs: int, length: int, *, vocab: int = 48, first_id: int = 4, alpha: float = 0.15,
                  seed: int = 0, table_seed: int | None = None) -> torch.Tensor:
    """``[num_seqs, length]`` ids from a seeded order-2 Markov chain (ids ``first_id … first_id + vocab − 1``).

    ``table_seed`` fixes the transition table (the "language"); ``seed`` the sampled sequences.
    """
    g = torch.Generator().manual_seed(table_seed if table_seed is not None else seed)
    # peaked rows (a Dirichlet-like power transform of seeded uniforms; torch.distributions takes no generator)
    weights = torch.rand(vocab, vocab, vocab, generator=g) ** (1.0 / alpha)
    table = weights / weights.sum(-1, keepdim=True)
    gs = torch.Generator().manual_seed(seed + 10_000)
    seqs = torch.empty(num_seqs, length, dtype=torch.long)
    seqs[:, :2] = torch.randint(0, vocab, (num_seqs, 2), generator=gs)
    for t in range(2, length):
        probs = table[seqs[:, t - 2], seqs[:, t - 1]]
        seqs[:, t] = torch.multinomial(probs, 1, generator=gs).squeeze(-1)
    return seqs + first_id


def train_toy_lm(seed: int = 0, *, family: str = "llama", steps: int = 300, hidden_size: int = 64, num_layers: int = 4,
                 seq_len: int = 48, batch_size: int = 32, lr: float = 3e-3, num_prompts: int = 32, prompt_len: int = 8,
                 progress: bool = True) -> tuple[nn.Module, list[list[int]]]:
    """Train a tiny ``family`` model on :func:`markov_corpus` with AdamW (fp32, CPU, deterministic at ``seed``).

    Returns:
        ``(model in eval mode, held-out prompts)``: ``num_prompts`` id lists of ``prompt_len`` tokens (BOS first).
    """
    from hf_ext.utils.progress import progress_bar

    from ..tiny import BOS_ID, tiny_causal_lm

    model = tiny_causal_lm(family, seed=seed, hidden_size=hidden_size, num_layers=num_layers).train()
    data = markov_corpus(steps * batch_size // 4 + num_prompts, seq_len, seed=seed, table_seed=1234)
    data = torch.cat([torch.full((data.shape[0], 1), BOS_ID), data], dim=1)
    held_out, train = data[:num_prompts], data[num_prompts:]
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for _ in progress_bar(range(steps), desc="train toy LM", enabled=progress):
            idx = torch.randint(0, train.shape[0], (batch_size,), generator=g)
            batch = train[idx]
            loss = model(input_ids=batch, labels=batch).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    prompts = held_out[:, :prompt_len].tolist()
    return model.eval(), prompts
