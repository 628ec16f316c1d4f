"""Every model-card template: renders without arguments, has a title and no placeholder text, Hub metadata
(library_name, pipeline_tag, model-index from evaluation variables) that passes the offline metadata check, and
loading snippets with the right Auto class."""

from __future__ import annotations

import re

import pytest
from huggingface_hub import ModelCard

from hf_ext.card_metadata import CARD_DEFAULTS, check_card_metadata
from hf_ext.hub import DATASET_CARDS, available_model_cards, render_model_card

MODEL_TEMPLATES = [t for t in available_model_cards() if t not in DATASET_CARDS]


def test_every_template_has_defaults():
    assert set(MODEL_TEMPLATES) == set(CARD_DEFAULTS)
    assert set(available_model_cards()) == set(MODEL_TEMPLATES) | set(DATASET_CARDS)


@pytest.mark.parametrize("template", MODEL_TEMPLATES)
def test_renders_without_arguments(template):
    card = render_model_card(template)
    meta = check_card_metadata(card)
    defaults = CARD_DEFAULTS[template]
    assert meta["library_name"] == defaults.library_name in ("transformers", "diffusers")
    assert meta["pipeline_tag"] == defaults.pipeline_tag
    body = card.text
    assert body.lstrip().startswith(f"# {defaults.title}\n")
    for placeholder in ("[More Information Needed]", "[unknown]", "Undefined", "{{", "{%"):
        assert placeholder not in body, placeholder
    assert not re.search(r"^## [^\n]+\n\s*(?=## |---)", body, flags=re.M), "a section heading without content"
    # a round trip through the file format keeps the metadata
    assert ModelCard(str(card)).data.to_dict() == card.data.to_dict()


@pytest.mark.parametrize("template", [t for t in MODEL_TEMPLATES if CARD_DEFAULTS[t].auto_class])
def test_loading_snippets_use_the_right_auto_class(template):
    text = render_model_card(template, repo_id="me/model").text
    auto = CARD_DEFAULTS[template].auto_class
    assert f'{auto}.from_pretrained("me/model")' in text
    assert "AutoModel.from_pretrained" not in text  # a causal LM loaded as a bare AutoModel loses its head


def test_umup_snippet_loads_a_causal_lm_with_remote_code_line():
    text = render_model_card("umup", remote_code=True, repo_id="me/umup").text
    assert 'AutoModelForCausalLM.from_pretrained("me/umup", trust_remote_code=True)' in text


@pytest.mark.parametrize("template,context,n_results", [
    ("scar", {"detection_auroc": {"toxicity": 0.91, "insult": 0.8}, "eval_dataset": "allenai/real-toxicity-prompts"}, 2),
    ("dtm_compressed", {"fdt": {"fdtm": 55.5, "fdt_median": 60, "fdt_full_share": 0.4, "sdtm": 0.12, "sdt_share": 0.1},
                        "num_prompts": 32, "num_tokens": 100}, 2),
    ("multifusion", {"mcc": {"text": 0.31, "multimodal": 0.52}}, 2),
    ("mvader", {"mcc": {"text": 0.2, "multimodal": 0.4}}, 2),
    ("sld", {"i2p": [{"category": "hate", "probability": 12.0, "exp_max": 40.0, "exp_max_std": 5.0}]}, 1),
])
def test_evaluation_variables_become_a_model_index(template, context, n_results):
    card = render_model_card(template, card_data={"license": "apache-2.0"}, **context)
    meta = check_card_metadata(card)
    (entry,) = meta["model-index"]
    assert entry["name"] == CARD_DEFAULTS[template].title
    parsed = ModelCard(str(card)).data.eval_results
    assert len(parsed) == n_results
    first_value = next(iter(context.values()))
    if isinstance(first_value, dict) and template != "dtm_compressed":
        assert parsed[0].metric_value == pytest.approx(next(iter(first_value.values())))
    # explicit eval_results win over the derived ones, and model_name names the index
    explicit = {"task_type": "text-generation", "dataset_type": "wikitext", "dataset_name": "WikiText",
                "metric_type": "perplexity", "metric_value": 9.5}
    card = render_model_card(template, card_data={"eval_results": [explicit], "model_name": "mine"}, **context)
    assert [r.metric_value for r in card.data.eval_results] == [9.5] and card.data.model_name == "mine"


def test_moral_direction_keeps_its_own_model_index():
    evals = [{"task_type": "text-classification", "dataset_type": "user-study-en", "dataset_name": "study",
              "metric_type": "pearsonr", "metric_value": 0.79}]
    card = render_model_card("moral_direction", card_data={"model_name": "md", "eval_results": evals})
    assert check_card_metadata(card)["model-index"][0]["results"][0]["metrics"][0]["value"] == 0.79


def test_check_card_metadata_rejects_what_the_hub_rejects():
    good = str(render_model_card("base"))
    with pytest.raises(ValueError, match=r"library_name='hf_ext' is not a library the Hub knows"):
        check_card_metadata(good.replace("library_name: transformers", "library_name: hf_ext"))
    with pytest.raises(ValueError, match=r"pipeline_tag='text-gen' is not a Hub task"):
        check_card_metadata(good.replace("pipeline_tag: text-generation", "pipeline_tag: text-gen"))
    with pytest.raises(ValueError, match="pipeline_tag=None"):
        check_card_metadata(good.replace("pipeline_tag: text-generation\n", ""))
    with pytest.raises(ValueError, match="does not parse"):
        check_card_metadata("---\nmodel-index:\n- results:\n  - task: {}\n---\n# x\n")
    with pytest.raises(ValueError, match="no YAML front matter"):
        check_card_metadata("# just a title\n")


def test_user_overrides_of_library_and_pipeline_are_kept():
    card = render_model_card("base", card_data={"library_name": "peft", "pipeline_tag": "text-classification",
                                                "tags": ["mine"]})
    assert (card.data.library_name, card.data.pipeline_tag, card.data.tags) == ("peft", "text-classification",
                                                                                ["mine", "hf_ext"])


def test_dataset_card_template_renders_with_defaults():
    from hf_ext.mad.api import render_dataset_card

    text = render_dataset_card([])
    assert text.startswith("---\n") and "{{" not in text and "[More Information Needed]" not in text
