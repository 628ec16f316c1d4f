"""Whether T-FREE's ``generate`` may decode with a cache: one cached step must score like a full forward.

The wrapper feeds its backbone word embeddings (``inputs_embeds``), never token ids. Some backbones' state does
not come back through such forwards (Mamba's, RWKV's); others round-trip their own cache but not the
``DynamicCache`` that ``generate()`` builds for this wrapper (xLSTM). Either is then decoded without a cache:
slower, exact. Checked once per model on the first prompt ``generate`` sees.

Example:
    >>> from hf_ext.tfree import TFreeConfig, TFreeForCausalLM, TFreeTokenizer
    >>> tok = TFreeTokenizer(words=["the", "cat", "sat"], hash_vocab_size=512, num_activations=4)
    >>> model = TFreeForCausalLM(TFreeConfig(hash_vocab_size=512, num_activations=4)).eval()
    >>> model.set_decode_dictionary(tok)
    >>> cache_exact(model, tok("the cat sat", return_tensors="pt").input_ids, None)  # an attention backbone
    True
"""

from __future__ import annotations

import weakref

import torch
from torch import nn

from hf_ext.utils.logging import get_logger

from ..compat import generation_vocab_size, output_cache

logger = get_logger(__name__)

# model -> whether one cached decoding step equals a full forward
_CACHE_EXACT: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def cache_exact(model: nn.Module, ids: torch.Tensor, mask: torch.Tensor | None) -> bool:
    """Whether ``model`` (a :class:`~hf_ext.tfree.TFreeForCausalLM`) decodes exactly with a cache.

    Args:
        model: the T-FREE causal LM.
        ids: ``[B, W]`` the word ids ``generate`` was given; the last row (unpadded) is the probe.
        mask: ``[B, W]`` their attention mask (1 = word), or ``None``.

    Returns:
        ``True`` where one cached step after a prefix pass — with the backbone's own cache and with the cache
        ``generate()`` builds — gives the full forward's next-word scores (within 1e-4); cached per model once a
        row of at least two words was seen.
    """
    known = _CACHE_EXACT.get(model)
    if known is not None:
        return known
    row = ids[-1:] if mask is None else ids[-1:, int((mask[-1] == 0).sum()):]
    exact = True
    if row.shape[1] >= 2:
        exact = all(_cached_step_exact(model, row, through_generate) for through_generate in (False, True))
        if not exact:
            logger.info("T-FREE backbone %r does not decode exactly with its cache through inputs_embeds: "
                        "generating without a cache", model.config.text_config.model_type)
        _CACHE_EXACT[model] = exact
    return exact


def _cached_step_exact(model: nn.Module, row: torch.Tensor, through_generate: bool) -> bool:
    """Whether the next-word scores of ``row`` ``[1, W]`` after a cached prefix pass equal a full forward's."""
    # imported here: importing transformers registers (imports) the T-FREE model, which imports this module
    from transformers import GenerationMixin

    prefix = row[:, :-1]
    try:
        if through_generate:
            with generation_vocab_size(model.config, model.dictionary_size):
                gen = GenerationMixin.generate(model, input_ids=prefix, attention_mask=torch.ones_like(prefix),
                                               max_new_tokens=2, do_sample=False, use_cache=True, output_logits=True,
                                               return_dict_in_generate=True, eos_token_id=None, pad_token_id=0)
            step, row = gen.logits[1][0], gen.sequences[:, :-1]
        else:
            cache = output_cache(model(input_ids=prefix, use_cache=True))
            if cache is None:
                return False
            step = model(input_ids=row[:, -1:], cache=cache, use_cache=True,
                         attention_mask=torch.ones_like(row)).logits[0, -1]
    except (NotImplementedError, RuntimeError, ValueError, TypeError, IndexError):
        return False  # a backbone whose cache does not round-trip (xLSTM's state shapes): no cache
    full = model(input_ids=row, use_cache=False).logits[0, -1]
    return bool(torch.allclose(step.float(), full.float(), atol=1e-4, rtol=1e-4))
