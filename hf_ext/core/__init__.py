"""Pieces shared by several hf_ext components: model inputs (batching, position ids, model facts), model anatomy,
resuming the decoder from a layer, hooks with a lifetime, attention manipulation, teacher-forced scoring and the
greedy reference cache.

Submodules are imported on first use (``hf_ext.core.attention`` etc.) so that ``import hf_ext.core`` is cheap.
"""

from __future__ import annotations

from hf_ext.registry import register_component
from hf_ext.utils.imports import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "inputs": ["check_in_vocabulary", "position_ids_from_mask", "prepare_batch", "tokenize_left_padded", "model_device",
               "vocab_size", "max_positions", "forward_accepts", "text_config", "pad_token_rows", "takes_mask_positions"],
    "anatomy": ["ModelAnatomy", "get_anatomy"],
    "masks": ["build_layer_masks"],
    "layers": ["run_layers", "forward_with_layer_inputs", "resume_refusal"],
    "resume_context": ["ResumeContext"],
    "hooks": ["forward_hooks", "module_swaps", "register_hooks", "HookHandle", "activate", "carry_context", "ContextExecutor",
              "current_params", "rows"],
    "attention_interface": ["routed_attention", "register_attention_functions", "require_dispatch", "awaiting_dispatch"],
    "attention_bypass": ["intercept_attention", "visible_from_scores"],
    "attention": ["attention_controls", "AttentionControl"],
    "key_positions": ["spans_to_key_positions", "key_weights", "items_to_key_positions"],
    "scoring": ["teacher_forced_logprobs", "token_cross_entropy", "IGNORE_INDEX",
                "TeacherForcedScores", "sequence_logprob", "cross_entropy_per_token"],
    "model_checks": ["check_causal", "padding_exact"],
    "reference": ["greedy_reference", "greedy_continuations", "PURE_GREEDY", "weights_fingerprint"],
    "cache": ["SuffixRecomputeCache"],
    "segments": ["Segment", "SegmentPlan", "segment_attention", "layer_map"],
})

register_component(
    name="core", title="Core", order=0, package=__name__,
    summary="model anatomy, resume-from-layer, hooks with a lifetime, attention manipulation, teacher-forced scoring",
    tour=".tour", extras=["plots"], notebook="01_core.ipynb",
)
