"""Hub metadata of the model cards: per-template defaults (``library_name``, ``pipeline_tag``, title, Auto class),
the ``model-index`` entries derived from a template's evaluation variables, and an offline metadata check.

The Hub validates a card's YAML server-side (``huggingface_hub.ModelCard.validate`` posts it to
``/api/validate-yaml``, which needs the network). :func:`check_card_metadata` is the offline part we can check: the
front matter parses into ``huggingface_hub.ModelCardData`` (strictly, ``ignore_metadata_errors=False``), the
``model-index`` parses back into the same ``EvalResult`` list, and ``library_name`` / ``pipeline_tag`` are ids the
Hub knows (:data:`HUB_LIBRARIES`, :data:`HUB_PIPELINE_TAGS`: the subsets of the Hub's lists in huggingface.js
``packages/tasks`` that hf_ext's cards use or that users commonly pass).

Example:
    >>> CARD_DEFAULTS["umup"].auto_class, CARD_DEFAULTS["sld"].library_name
    ('AutoModelForCausalLM', 'diffusers')
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from huggingface_hub import ModelCard

__all__ = ["CARD_DEFAULTS", "HUB_LIBRARIES", "HUB_PIPELINE_TAGS", "CardDefaults", "check_card_metadata",
           "derived_eval_results"]

#: ``library_name`` values the Hub recognises (a subset of huggingface.js ``model-libraries.ts``).
HUB_LIBRARIES: frozenset[str] = frozenset({"transformers", "diffusers", "sentence-transformers", "peft", "timm",
                                           "open_clip", "safetensors", "transformers.js"})
#: ``pipeline_tag`` values the Hub recognises (a subset of huggingface.js ``pipelines.ts``).
HUB_PIPELINE_TAGS: frozenset[str] = frozenset({
    "text-generation", "text-classification", "token-classification", "fill-mask", "feature-extraction",
    "sentence-similarity", "question-answering", "summarization", "translation", "zero-shot-classification",
    "text-to-image", "image-to-image", "image-to-text", "image-text-to-text", "image-classification",
    "automatic-speech-recognition", "text-to-speech", "visual-question-answering"})


@dataclass(frozen=True)
class CardDefaults:
    """Defaults of one template's card (each overridable through ``card_data`` or the template context).

    Attributes:
        library_name: the Hub library (``transformers`` / ``diffusers``).
        pipeline_tag: the Hub task.
        title: the card's title when no ``model_name`` is given.
        auto_class: the transformers Auto class of the loading snippet (None for pipelines and non-models).
    """

    library_name: str
    pipeline_tag: str
    title: str
    auto_class: str | None = None


CARD_DEFAULTS: dict[str, CardDefaults] = {
    "base": CardDefaults("transformers", "text-generation", "hf_ext model", "AutoModelForCausalLM"),
    "scar": CardDefaults("transformers", "text-generation", "SCAR adapter", "AutoModelForCausalLM"),
    "tfree": CardDefaults("transformers", "text-generation", "T-FREE model", "AutoModelForCausalLM"),
    "umup": CardDefaults("transformers", "text-generation", "u-μP model", "AutoModelForCausalLM"),
    "dtm_compressed": CardDefaults("transformers", "text-generation", "DTM-compressed model", "AutoModelForCausalLM"),
    # a direction in a sentence encoder's embedding space that scores text on a good-bad axis
    "moral_direction": CardDefaults("transformers", "text-classification", "MoralDirection"),
    "multifusion": CardDefaults("diffusers", "text-to-image", "MultiFusion pipeline"),
    "mvader": CardDefaults("diffusers", "text-to-image", "M-VADER pipeline"),
    "sld": CardDefaults("diffusers", "text-to-image", "Safe Latent Diffusion pipeline"),
}


def _result(task: str, dataset_type: str, dataset_name: str, metric_type: str, value: float,
            metric_name: str | None = None) -> dict[str, Any]:
    out = {"task_type": task, "dataset_type": dataset_type, "dataset_name": dataset_name, "metric_type": metric_type,
           "metric_value": round(float(value), 6)}
    if metric_name:
        out["metric_name"] = metric_name
    return out


def derived_eval_results(template: str, context: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The ``model-index`` entries (dicts of ``EvalResult`` fields) of a template's evaluation variables, so that a
    card with results shows them to the Hub as well as in its table. Templates without such variables give ``[]``.

    ``scar``: ``detection_auroc`` (concept -> AUROC; dataset ``eval_dataset`` or "held-out concept labels");
    ``dtm_compressed``: ``fdt`` (FDTM, SDTM on ``num_prompts`` prompts); ``multifusion``/``mvader``: ``mcc``
    (text / multimodal accuracy); ``sld``: ``i2p`` (probability of an inappropriate image per category).

    Example:
        >>> derived_eval_results("scar", {"detection_auroc": {"toxicity": 0.91}})[0]["metric_type"]
        'roc_auc'
    """
    out: list[dict[str, Any]] = []
    if template == "scar" and context.get("detection_auroc"):
        ds = str(context.get("eval_dataset") or "custom")
        for concept, value in context["detection_auroc"].items():
            out.append(_result("text-classification", ds, str(context.get("eval_dataset") or "held-out concept labels"),
                               "roc_auc", value, f"{concept} detection AUROC"))
    elif template == "dtm_compressed" and context.get("fdt"):
        name = f"{context.get('num_prompts', '')} prompts, N = {context.get('num_tokens', '?')}".strip()
        for key, label in (("fdtm", "FDTM (mean first divergent token)"), ("sdtm", "SDTM (mean share divergent)")):
            if key in context["fdt"]:
                out.append(_result("text-generation", "custom", name, key, context["fdt"][key], label))
    elif template in ("multifusion", "mvader") and context.get("mcc"):
        for key in ("text", "multimodal"):
            if key in context["mcc"]:
                out.append(_result("text-to-image", "mcc-250", "MCC-250 (CLIP proxy)", "accuracy", context["mcc"][key],
                                   f"{key} prompts accuracy"))
    elif template == "sld" and context.get("i2p"):
        for row in context["i2p"]:
            out.append(_result("text-to-image", "AIML-TUDA/i2p", "I2P", "inappropriate_probability",
                               row["probability"], f"{row['category']}: P(inappropriate) %"))
    return out


def check_card_metadata(card: ModelCard | str) -> dict[str, Any]:
    """Check a rendered card's front matter offline, as far as the Hub's rules can be checked without it.

    Args:
        card: a ``huggingface_hub.ModelCard`` or its text.

    Returns:
        The parsed metadata dict.

    Raises:
        ValueError: no or unparsable front matter, a ``model-index`` that does not parse back into the same eval
            results, a ``library_name`` or ``pipeline_tag`` the Hub does not know (the message names the field,
            the value and the accepted ones), or no ``pipeline_tag``.

    Example:
        >>> from hf_ext.hub import render_model_card
        >>> check_card_metadata(render_model_card("umup"))["pipeline_tag"]
        'text-generation'
    """
    from huggingface_hub import ModelCard
    from huggingface_hub.repocard_data import eval_results_to_model_index, model_index_to_eval_results

    text = str(card)
    try:
        parsed = ModelCard(text, ignore_metadata_errors=False)
    except Exception as err:  # huggingface_hub raises ValueError / yaml errors / KeyError on bad metadata
        raise ValueError(f"card metadata does not parse: {err}") from err
    meta = parsed.data.to_dict()
    if not meta:
        raise ValueError("card has no YAML front matter")
    library = meta.get("library_name")
    if library not in HUB_LIBRARIES:
        raise ValueError(f"library_name={library!r} is not a library the Hub knows; use one of {sorted(HUB_LIBRARIES)}")
    tag = meta.get("pipeline_tag")
    if tag not in HUB_PIPELINE_TAGS:
        raise ValueError(f"pipeline_tag={tag!r} is not a Hub task; use one of {sorted(HUB_PIPELINE_TAGS)}")
    if "model-index" in meta:
        name, results = model_index_to_eval_results(meta["model-index"])
        if eval_results_to_model_index(name, results) != meta["model-index"]:
            raise ValueError("model-index does not round-trip through huggingface_hub's EvalResult parser")
    return meta
