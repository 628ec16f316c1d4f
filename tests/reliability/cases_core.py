"""Catalogue cases: hf_ext.core and hf_ext.utils (tiny offline models)."""

from __future__ import annotations

import functools

import torch

from hf_ext.core import (
    attention_controls,
    carry_context,
    forward_hooks,
    get_anatomy,
    greedy_reference,
    key_weights,
    prepare_batch,
    run_layers,
    teacher_forced_logprobs,
)
from hf_ext.core.cache import SuffixRecomputeCache
from hf_ext.testing import tiny_causal_lm
from hf_ext.utils.validation import check_layer, check_str_list, check_token_ids

from .catalogue import case, choice_cases, int_cases


@functools.cache
def lm(family: str = "llama"):
    return tiny_causal_lm(family)


def _enter(cm):
    with cm:
        pass


for family in ("llama", "gpt2"):
    vocab = lm(family).get_input_embeddings().num_embeddings
    for bad in (vocab, vocab + 5, 10**6, -1):
        case(f"core.prepare_batch[{family}]:input_ids={bad}", lambda b=bad, f=family: prepare_batch(lm(f), [[1, b]]),
             "input_ids", str(bad))
        case(f"core.teacher_forced_logprobs[{family}]:continuation_ids={bad}",
             lambda b=bad, f=family: teacher_forced_logprobs(lm(f), [[1, 2]], [[b]]), "continuation_ids", str(bad))
        case(f"core.teacher_forced_logprobs[{family}]:prompt_ids={bad}",
             lambda b=bad, f=family: teacher_forced_logprobs(lm(f), [[1, b]], [[2]]), "prompt_ids", str(bad))
    case(f"core.prepare_batch[{family}]:input_ids=str", lambda f=family: prepare_batch(lm(f), "hello"),
         "input_ids", "str")
    case(f"core.prepare_batch[{family}]:input_ids=float", lambda f=family: prepare_batch(lm(f), [[1.5, 2.0]]),
         "input_ids", "1.5")

int_cases("core.teacher_forced_logprobs", lambda v: teacher_forced_logprobs(lm(), [[1, 2]], [[3]], batch_size=v),
          "batch_size", min=1, allow_none=True)
int_cases("core.greedy_reference", lambda v: greedy_reference(lm(), [[1, 2]], max_new_tokens=v, progress=False),
          "max_new_tokens", min=1, size=True)
int_cases("core.greedy_reference", lambda v: greedy_reference(lm(), [[1, 2]], max_new_tokens=2, batch_size=v,
                                                              progress=False), "batch_size", min=1)
for bad in ("a", "all ", "3", 1.0, True, [0, "1"], [], 2, -3, 99):
    case(f"core.ModelAnatomy.resolve_layers:layers={bad!r}", lambda b=bad: get_anatomy(lm()).resolve_layers(b),
         "layers", repr(bad) if not isinstance(bad, list) else "")
    case(f"core.attention_controls:layers={bad!r}",
         lambda b=bad: _enter(attention_controls(lm(), torch.ones(1, 3), layers=b)), "layers")
choice_cases("core.attention_controls", lambda v: _enter(attention_controls(lm(), torch.ones(1, 3), mode=v)), "mode",
             bad=("cubic", "", 3))
for bad in (-1, 3, 1.5, "1", None):
    case(f"core.run_layers:start_layer={bad!r}",
         lambda b=bad: run_layers(lm(), torch.zeros(1, 3, 64), b), "start_layer", repr(bad))
case("core.forward_hooks:hooks={'x': fn}", lambda: _enter(forward_hooks({"x": lambda *a: None})), "nn.Module", "str")
case("core.carry_context:fn=3", lambda: carry_context(3), "carry_context", "3")
int_cases("core.SuffixRecomputeCache", lambda v: SuffixRecomputeCache(v), "length", min=1)
case("core.key_weights:positions=str", lambda: key_weights(1, 4, "ab", 0.5), "positions")

# hf_ext.utils.validation directly (the shared checks)
for bad in ("abc", b"ab", 3, [1, 2], ["a", ""], ["a", "a"], [], {"a": 1}):
    case(f"utils.check_str_list:concepts={bad!r}", lambda b=bad: check_str_list("concepts", b, unique=True),
         "concepts", repr(bad))
for bad in ("all", -5, 4, 1.0, None, True):
    case(f"utils.check_layer:layer={bad!r}", lambda b=bad: check_layer("layer", b, 4), "layer", repr(bad))
for bad in ([[1, 99]], [[-1]], torch.tensor([[1, 50]]), torch.tensor([[0.5]]), [["a"]]):
    case(f"utils.check_token_ids:ids={bad!r}", lambda b=bad: check_token_ids("input_ids", b, 10), "input_ids")
case("core.prepare_batch:continuations=[[100000]]",
     lambda: prepare_batch(lm(), [[1]], continuations=[[10**5]]), "continuations", "100000")
