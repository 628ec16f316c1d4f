"""A faithful transcription of the reference MAD generators (``athms/mad-lab:mad/data/instances.py@0f49a45``, MIT).

This is the *independent reference* the tests compare :mod:`hf_ext.mad.generators` against: it keeps the
reference's per-example Python loop, its list-of-tuples permutation shuffles and its global-RNG insert positions
(selective copying), with only the unused code paths trimmed. Do not "optimise" it.

Copyright (c) 2024 Armin W. Thomas et al. (mad-lab, MIT licence; see NOTICE).
"""

from __future__ import annotations

from itertools import permutations

import numpy as np


def generate_vocab_permutations(vocab, token_motif_size=1, rng=None):
    values = list(permutations(vocab, token_motif_size))
    if rng is not None:
        rng.shuffle(values)
    return values


def generate_in_context_recall_instance(vocab_size=16, seq_len=128, is_training=True, rng=None,
                                        target_ignore_idx=-100, multi_query=False, noise_vocab_size=16,
                                        frac_noise=0.0, **kwargs):
    copy_prefix = vocab_size - 1
    non_special_vocab_size = vocab_size - 1 if not multi_query else vocab_size
    non_special_vocab_size -= noise_vocab_size
    key_vocab = np.arange(non_special_vocab_size // 2)
    value_vocab = np.arange(non_special_vocab_size // 2, non_special_vocab_size)
    if frac_noise > 0:
        noise_vocab = np.arange(non_special_vocab_size, non_special_vocab_size + noise_vocab_size)
    kv_map = {}
    inputs, targets = [], []
    keys_presented = {}
    kv_motif_size = 2
    num_kv_pairs = seq_len // kv_motif_size
    not_noise_idx = rng.choice(num_kv_pairs)
    for i in range(num_kv_pairs - 1):
        is_noise = rng.random() < frac_noise if i != not_noise_idx and frac_noise > 0 else False
        if is_noise:
            noise = rng.choice(noise_vocab, size=kv_motif_size, replace=True)
            inputs += list(noise)
            targets += [target_ignore_idx] * kv_motif_size
        else:
            k = rng.choice(key_vocab)
            if k not in kv_map:
                v = rng.choice(value_vocab)
                kv_map[k] = v
            else:
                v = kv_map[k]
            inputs.append(k)
            inputs.append(v)
            targets.append(target_ignore_idx)
            if k not in keys_presented:
                targets.append(target_ignore_idx)
            else:
                targets.append(v if multi_query else target_ignore_idx)
            keys_presented[k] = v
    k_probe = rng.choice(list(keys_presented.keys()))
    v_probe = keys_presented[k_probe]
    if not multi_query:
        inputs.append(copy_prefix)
    inputs.append(k_probe)
    inputs.append(v_probe)
    if not multi_query:
        targets.append(-100)
    targets.append(-100)
    targets.append(v_probe)
    inputs = np.array(inputs).astype(int)
    targets = np.array(targets).astype(int)
    if is_training:
        return inputs[:-1], inputs[1:]
    return inputs[:-1], targets[1:]


def generate_fuzzy_in_context_recall_instance(vocab_size=16, seq_len=128, k_motif_size=3, v_motif_size=3,
                                              is_training=True, rng=None, target_ignore_idx=-100,
                                              multi_query=False, noise_vocab_size=0, frac_noise=0, **kwargs):
    copy_prefix = vocab_size - 1
    pad_token = vocab_size - 2 if not multi_query else vocab_size - 1
    non_special_vocab_size = vocab_size - 2 if not multi_query else vocab_size - 1
    non_special_vocab_size -= noise_vocab_size
    key_vocab = np.arange(non_special_vocab_size // 2)
    value_vocab = np.arange(non_special_vocab_size // 2, non_special_vocab_size)
    if is_training:
        keys = {}
        for motif_size in range(1, k_motif_size + 1):
            keys[motif_size] = generate_vocab_permutations(key_vocab, token_motif_size=motif_size, rng=rng)
        values = {}
        for motif_size in range(1, v_motif_size + 1):
            values[motif_size] = generate_vocab_permutations(value_vocab, token_motif_size=motif_size, rng=rng)
    else:
        keys = {k_motif_size: generate_vocab_permutations(key_vocab, token_motif_size=k_motif_size, rng=rng)}
        values = {}
        for motif_size in range(1, v_motif_size + 1):
            values[motif_size] = generate_vocab_permutations(value_vocab, token_motif_size=motif_size, rng=rng)
    if frac_noise > 0:
        noise_vocab = np.arange(non_special_vocab_size, non_special_vocab_size + noise_vocab_size)
    k_probe_size = rng.choice(list(keys.keys())) if is_training else k_motif_size
    v_probe_size = rng.choice(list(values.keys()))
    k_probe = tuple(rng.choice(keys[k_probe_size]))
    v_probe = tuple(rng.choice(values[v_probe_size]))
    kv_probe_size = k_probe_size + v_probe_size
    probe_idx = rng.choice(seq_len - kv_probe_size - kv_probe_size)
    probe_added = False
    kv_map = {s: {} for s in range(1, k_motif_size + 1)}
    inputs, targets = [], []
    keys_presented = {}
    while len(inputs) < seq_len - kv_probe_size - (k_motif_size + v_motif_size):
        k_size = rng.choice(list(keys.keys())) if is_training else k_motif_size
        v_size = rng.choice(list(values.keys()))
        if len(inputs) >= probe_idx and not probe_added:
            inputs.extend(k_probe)
            inputs.extend(v_probe)
            targets.extend(tuple([target_ignore_idx] * (k_probe_size + len(v_probe))))
            kv_map[k_probe_size][k_probe] = v_probe
            keys_presented[k_probe] = v_probe
            probe_added = True
            continue
        is_noise = rng.random() < frac_noise if frac_noise > 0 else False
        if is_noise:
            noise_size = k_size + v_size
            noise = rng.choice(noise_vocab, size=noise_size, replace=True)
            inputs.extend(noise)
            targets.extend(tuple([target_ignore_idx] * noise_size))
        else:
            k = tuple(rng.choice(keys[k_size]))
            inputs.extend(k)
            if k == k_probe:
                v = v_probe
                probe_added = True
            else:
                if k not in kv_map[k_size]:
                    v = tuple(rng.choice(values[v_size]))
                    kv_map[k_size][k] = v
                else:
                    v = kv_map[k_size][k]
            inputs.extend(v)
            targets.extend(tuple([target_ignore_idx] * k_size))
            if k not in keys_presented:
                targets.extend(tuple([target_ignore_idx] * len(v)))
            else:
                if multi_query:
                    targets.extend(v)
                else:
                    targets.extend(tuple([target_ignore_idx] * len(v)))
            keys_presented[k] = v
    if not multi_query:
        inputs.extend(tuple([copy_prefix]))
    inputs.extend(k_probe)
    inputs.extend(v_probe)
    if not multi_query:
        targets.extend(tuple([-100]))
    targets.extend(tuple([-100] * k_probe_size))
    targets.extend(v_probe)
    inputs = np.array(inputs).astype(int)
    targets = np.array(targets).astype(int)
    if len(inputs) < (seq_len + 1):
        n_pad = seq_len + 1 - len(inputs)
        inputs = np.concatenate([np.array([pad_token] * n_pad), inputs])
        targets = np.concatenate([np.array([target_ignore_idx] * n_pad), targets])
    if is_training:
        return inputs[:-1], inputs[1:]
    return inputs[:-1], targets[1:]


def generate_kv_map(vocab_size, k_motif_size=1, v_motif_size=1, seed=12345):
    kv_map_rng = np.random.default_rng(seed)
    key_vocab = np.arange(vocab_size // 2)
    value_vocab = np.arange(vocab_size // 2, vocab_size)
    keys = generate_vocab_permutations(key_vocab, k_motif_size, kv_map_rng)
    values = generate_vocab_permutations(value_vocab, v_motif_size, kv_map_rng)
    return {k: v for k, v in zip(keys, values)}


def generate_memorization_instance(vocab_size=256, seq_len=32, kv_map=None, noise_vocab_size=0, frac_noise=0,
                                   rng=None, target_ignore_idx=-100, kv_map_seed=12345, **kwargs):
    insert_token = vocab_size - 1
    non_special_vocab_size = vocab_size - 1
    non_special_vocab_size -= noise_vocab_size
    if kv_map is None:
        kv_map = generate_kv_map(vocab_size=non_special_vocab_size, k_motif_size=1, v_motif_size=1, seed=kv_map_seed)
    keys = list(kv_map.keys())
    if frac_noise > 0:
        noise_vocab = np.arange(non_special_vocab_size, non_special_vocab_size + noise_vocab_size)
    inputs, targets = [], []
    kv_motif_size = 2
    num_kv_pairs = seq_len // kv_motif_size
    not_noise_idx = rng.choice(num_kv_pairs)
    for i in range(num_kv_pairs):
        is_noise = rng.random() < frac_noise if i != not_noise_idx and frac_noise > 0 else False
        if is_noise:
            noise = rng.choice(noise_vocab, size=kv_motif_size, replace=True)
            inputs.append(noise)
            targets.append([target_ignore_idx] * kv_motif_size)
        else:
            k = tuple(rng.choice(keys))
            v = kv_map[k]
            inputs.append(k)
            inputs.append([insert_token])
            targets.append([target_ignore_idx])
            targets.append(v)
    inputs = np.concatenate(inputs).astype(int)
    targets = np.concatenate(targets).astype(int)
    return inputs, targets


def generate_compression_instance(vocab_size=16, seq_len=32, noise_vocab_size=0, frac_noise=0, rng=None,
                                  target_ignore_idx=-100, **kwargs):
    compression_token = vocab_size - 1
    non_special_vocab_size = vocab_size - 1
    non_special_vocab_size -= noise_vocab_size
    vocab = np.arange(non_special_vocab_size)
    inputs = rng.choice(vocab, size=(seq_len - 1,), replace=True).reshape(-1)
    inputs = np.concatenate([inputs, np.array([compression_token])])
    targets = np.array(inputs)
    if frac_noise > 0:
        noise_vocab = np.arange(non_special_vocab_size, non_special_vocab_size + noise_vocab_size)
        for i in range(seq_len - 1):
            if rng.random() < frac_noise:
                inputs[i:(i + 1)] = rng.choice(noise_vocab)
                targets[i:(i + 1)] = target_ignore_idx
    return inputs, inputs


def generate_selective_copying_instance(vocab_size=16, seq_len=256, num_tokens_to_copy=16, rng=None,
                                        target_ignore_idx=-100, **kwargs):
    copy_token = vocab_size - 1
    blank_token = vocab_size - 2
    non_special_vocab_size = vocab_size - 2
    vocab = np.arange(non_special_vocab_size)
    num_blank_tokens = seq_len - (num_tokens_to_copy * 2) - 1
    to_copy = rng.choice(vocab, size=(num_tokens_to_copy,), replace=True).reshape(-1)
    inputs = np.array(to_copy)
    insert_indices = np.random.randint(0, len(inputs), num_blank_tokens)  # the GLOBAL legacy RNG
    inputs = np.insert(inputs, insert_indices, [blank_token] * num_blank_tokens).tolist()
    inputs += [copy_token]
    inputs += [blank_token] * num_tokens_to_copy
    inputs = np.array(inputs)
    targets = [target_ignore_idx] * (num_tokens_to_copy + num_blank_tokens + 1)
    targets += list(to_copy)
    targets = np.array(targets)
    return inputs, targets


INSTANCE_FNS = {
    "in-context-recall": generate_in_context_recall_instance,
    "noisy-in-context-recall": generate_in_context_recall_instance,
    "fuzzy-in-context-recall": generate_fuzzy_in_context_recall_instance,
    "memorization": generate_memorization_instance,
    "compression": generate_compression_instance,
    "selective-copying": generate_selective_copying_instance,
}


def reference_generate(task, *, vocab_size, seq_len, num_train_examples, num_test_examples, frac_noise=0.0,
                       noise_vocab_size=0, num_tokens_to_copy=0, k_motif_size=1, v_motif_size=1,
                       multi_query=True, seed=12345):
    """``train.py``'s data path: ``np.random.seed(seed)``, one ``default_rng(seed)`` for train then test.

    Returns ``(train_inputs, train_targets, test_inputs, test_targets)`` as int64 arrays.
    """
    np.random.seed(seed)
    kv_map = generate_kv_map(vocab_size - 1, seed=seed) if task == "memorization" else None
    kwargs = dict(vocab_size=vocab_size, seq_len=seq_len, k_motif_size=k_motif_size, v_motif_size=v_motif_size,
                  frac_noise=frac_noise, noise_vocab_size=noise_vocab_size, num_tokens_to_copy=num_tokens_to_copy,
                  rng=np.random.default_rng(seed), multi_query=multi_query, kv_map=kv_map)
    fn = INSTANCE_FNS[task]
    out = []
    for is_training, n in ((True, num_train_examples), (False, num_test_examples)):
        inst = [fn(is_training=is_training, **kwargs) for _ in range(n)]
        out += [np.stack([i[0] for i in inst]).astype(np.int64), np.stack([i[1] for i in inst]).astype(np.int64)]
    return tuple(out)
