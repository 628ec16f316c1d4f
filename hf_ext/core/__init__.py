"""Pieces shared by several hf_ext components: model inputs (batching, position ids, model facts), model anatomy,
resuming the decoder from a layer, hooks with a lifetime, attention manipulation, teacher-forced scoring and the
greedy reference cache.

Submodules are imported on first use (``hf_ext.core.attention`` etc.) so that ``import hf_ext.core`` is cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "position_ids_from_mask": "inputs",
    "prepare_batch": "inputs",
    "tokenize_left_padded": "inputs",
    "model_device": "inputs",
    "vocab_size": "inputs",
    "max_positions": "inputs",
    "forward_accepts": "inputs",
    "text_config": "inputs",
    "pad_token_rows": "inputs",
    "ModelAnatomy": "anatomy",
    "get_anatomy": "anatomy",
    "run_layers": "layers",
    "forward_hooks": "hooks",
    "module_swaps": "hooks",
    "register_hooks": "hooks",
    "HookHandle": "hooks",
    "activate": "hooks",
    "routed_attention": "attention_interface",
    "register_attention_functions": "attention_interface",
    "require_dispatch": "attention_interface",
    "attention_controls": "attention",
    "AttentionControl": "attention",
    "spans_to_key_positions": "attention",
    "key_weights": "attention",
    "teacher_forced_logprobs": "scoring",
    "check_causal": "model_checks",
    "padding_exact": "model_checks",
    "greedy_reference": "reference",
    "greedy_continuations": "reference",
    "PURE_GREEDY": "reference",
    "token_cross_entropy": "scoring",
    "IGNORE_INDEX": "scoring",
    "TeacherForcedScores": "scoring",
    "sequence_logprob": "scoring",
    "cross_entropy_per_token": "scoring",
    "weights_fingerprint": "reference",
    "items_to_key_positions": "attention",
    "build_layer_masks": "layers",
    "current_params": "hooks",
    "rows": "hooks",
    "SuffixRecomputeCache": "cache",
    "Segment": "segments",
    "SegmentPlan": "segments",
    "segment_attention": "segments",
    "layer_map": "segments",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'hf_ext.core' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    globals()[name] = value
    return value
