"""Shared tiny SD/SDXL components for the SLD tests (built once per module; pipelines share them read-only)."""

from __future__ import annotations

import logging
import warnings

import pytest
import torch

from hf_ext.testing import tiny_sd_components, tiny_sdxl_components


@pytest.fixture(autouse=True)
def _quiet_truncation_warnings():
    """The 198-token default concept is truncated by the 16-token tiny tokenizer: expected, keep the logs quiet (for
    the SLD tests only: transformers' level also silences hf_ext's loggers and progress bars)."""
    loggers = [logging.getLogger("diffusers"), logging.getLogger("transformers")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    yield
    for logger, level in zip(loggers, levels):
        logger.setLevel(level)


@pytest.fixture(scope="session")
def sd_components():
    """Tiny SD 1.x components with a DDIM scheduler whose ``steps_offset`` is 1 (as real SD checkpoints)."""
    from diffusers import DDIMScheduler

    c = tiny_sd_components(seed=0)
    c["scheduler"] = DDIMScheduler.from_config(c["scheduler"].config, steps_offset=1)
    return c


@pytest.fixture(scope="session")
def sdxl_components():
    return tiny_sdxl_components(seed=0)


@pytest.fixture(scope="session")
def sld_pipe(sd_components):
    from hf_ext.diffusion.sld import SafeLatentDiffusionPipeline

    pipe = SafeLatentDiffusionPipeline(**sd_components)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="session")
def ref_pipe(sd_components):
    """diffusers' deprecated StableDiffusionPipelineSafe on the same components (the parity oracle)."""
    from diffusers import StableDiffusionPipelineSafe

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipe = StableDiffusionPipelineSafe(**sd_components, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


class BatchRecorder:
    """Forward pre-hook on a UNet recording the batch size of every call."""

    def __init__(self, unet):
        self.batches: list[int] = []
        self.kwargs: list[dict] = []
        self.handle = unet.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs):
        sample = args[0] if args else kwargs["sample"]
        self.batches.append(int(sample.shape[0]))
        self.kwargs.append({k: (v.shape if torch.is_tensor(v) else v) for k, v in kwargs.items()})

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.remove()
