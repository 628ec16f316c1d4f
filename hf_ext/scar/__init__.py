"""SCAR: sparse conditioned autoencoders that detect and steer concepts in any transformers causal LM.

Public API (imported lazily, so ``hf_ext.scar.cli`` stays torch-free):
    * :class:`ScarConfig`, :class:`ScarAdapter` (attach / steer / reconstruct / detect / save / load),
      :class:`ScarModel` (base model + adapter for ``from_pretrained`` / ``generate``).
    * training: :func:`build_activation_dataset`, :func:`train_scar`, :func:`train_scar_end_to_end`,
      :class:`ScarTrainer`.
    * evaluation: :func:`auroc`, :func:`detection_auroc`, :func:`steering_fdt`, :func:`toxicity_scores`.
    * toy experiment: :func:`hf_ext.scar.toy.run_toy_experiment`.

Example:
    >>> from hf_ext.scar import ScarAdapter
    >>> from hf_ext.testing import tiny_causal_lm
    >>> model = tiny_causal_lm("gpt2")
    >>> scar = ScarAdapter.for_model(model, layer=1, concepts=["toxicity"]).attach(model)
    >>> scar.config.n_latents, scar.config.k
    (384, 32)
"""

import importlib
from typing import Any

_EXPORTS = {
    "ScarConfig": "configuration_scar", "SITES": "configuration_scar", "STEERING_OUTPUTS": "configuration_scar",
    "ScarAdapter": "modeling_scar", "ScarModel": "modeling_scar", "ScarOutput": "modeling_scar",
    "ScarDetection": "modeling_scar", "nmse": "modeling_scar", "load_reference_sae_state_dict": "reference_checkpoint",
    "load_reference_checkpoint": "reference_checkpoint",
    "build_activation_dataset": "training", "train_scar": "training", "train_scar_end_to_end": "training",
    "ScarTrainer": "training", "ScarEndToEnd": "training",
    "auroc": "evaluation", "detection_auroc": "evaluation", "steering_fdt": "evaluation",
    "toxicity_scores": "evaluation", "concept_word_rate": "evaluation",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = sorted(_EXPORTS)
