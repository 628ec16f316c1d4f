"""SCAR: sparse conditioned autoencoders that detect and steer concepts in any transformers causal LM.

Public API (imported lazily, so ``hf_ext.scar.cli`` stays torch-free):
    * :class:`ScarConfig`, :class:`ScarAdapter` (attach / steer / reconstruct / detect / latent_report / save / load;
      hooked at an MLP, attention, residual stream position or any named module),
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

from __future__ import annotations

from hf_ext.registry import AutoClasses, register_component
from hf_ext.utils.imports import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "configuration_scar": ["ScarConfig", "SITES", "STEERING_OUTPUTS"],
    "modeling_scar": ["ScarAdapter", "ScarModel", "ScarOutput", "ScarDetection", "nmse", "load_reference_checkpoint"],
    "reference_checkpoint": ["load_reference_sae_state_dict"],
    "latent_report": ["LatentReport", "LatentContext", "latent_report"],
    "training": ["build_activation_dataset", "train_scar", "train_scar_end_to_end", "ScarTrainer", "ScarEndToEnd"],
    "evaluation": ["auroc", "detection_auroc", "steering_fdt", "toxicity_scores", "concept_word_rate"],
})

register_component(
    name="scar", title="SCAR", order=10, package=__name__,
    summary="SCAR: sparse conditioned autoencoders (concept detection and steering)",
    auto=[AutoClasses("scar", config=".configuration_scar:ScarConfig",  # the config names the base model
                      models={"AutoModelForCausalLM": ".modeling_scar:ScarModel"})],
    cli=".cli", tour=".tour", reproduction="hf_ext.reproduce.scar", cards=["scar"], extras=["scar", "plots"], notebook="02_scar.ipynb",
)
