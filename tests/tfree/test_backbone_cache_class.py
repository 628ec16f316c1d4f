"""T-FREE ``generate`` on backbones that keep a cache of their own (issue 17).

transformers decides by the generating class's name whether ``generate`` may hand the model a ``DynamicCache``; the
T-FREE wrapper asks for its backbone's class instead (MiniMax rejects a ``DynamicCache`` and creates its
``MiniMaxCache`` when given none). Reference: a naive greedy loop of full forwards without cache or padding
(``tests/conformance/cells.py``).
"""

from __future__ import annotations

import pytest

from tests.conformance.catalog import build
from tests.conformance.cells import check_tfree


@pytest.mark.parametrize("model_type", ["minimax", "xlstm"])
def test_generate_equals_a_naive_loop_with_the_backbones_own_cache(model_type):
    check_tfree(build(model_type), model_type)


def test_a_backbone_without_one_width_is_refused_by_name():
    import transformers

    from hf_ext.tfree import TFreeConfig

    with pytest.raises(NotImplementedError, match="'blt' backbone: its config has no integer hidden_size"):
        TFreeConfig(text_config=transformers.BltConfig(), hash_vocab_size=512, num_activations=4)
