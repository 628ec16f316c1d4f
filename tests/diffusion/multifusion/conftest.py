"""Tiny MultiFusion fixtures, built once per session (offline, CPU, fp32)."""

from __future__ import annotations

import pytest

from hf_ext.testing import tiny_llava, tiny_tokenizer

#: The causal-LM families the MAGMA route is tested on ("any causal LM" claims need >= 3).
MAGMA_FAMILIES = ("llama", "gpt2", "gpt_neox", "qwen2")

_CACHE: dict = {}


def _magma(family):
    if family not in _CACHE:
        from hf_ext.diffusion.multifusion.tiny import tiny_magma_encoder

        _CACHE[family] = tiny_magma_encoder(family, adapter_location="both")
    return _CACHE[family]


@pytest.fixture(scope="session")
def llava():
    return tiny_llava()


@pytest.fixture(scope="session")
def image_processor():
    from hf_ext.diffusion.multifusion.tiny import tiny_image_processor

    return tiny_image_processor()


@pytest.fixture(params=MAGMA_FAMILIES)
def magma_encoder(request, image_processor):
    """An InterleavedEncoder over a session-cached MagmaEncoder of each family (tests must not modify it)."""
    from hf_ext.diffusion.multifusion import InterleavedEncoder

    return InterleavedEncoder(_magma(request.param), tiny_tokenizer(), image_processor)


@pytest.fixture
def llava_encoder(llava):
    from hf_ext.diffusion.multifusion import InterleavedEncoder

    model, processor = llava
    return InterleavedEncoder(model, processor.tokenizer, processor.image_processor)


@pytest.fixture(scope="session")
def red_image():
    from PIL import Image

    return Image.new("RGB", (32, 32), (220, 30, 30))


@pytest.fixture(scope="session")
def noise_image():
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 255, (40, 36, 3), dtype=np.uint8))
