"""Every Python block of README.md and docs/**/*.md runs, verbatim, on tiny offline models.

The one substitution allowed: a Hub id string (with its quotes) becomes a tiny-factory call, listed in
:data:`HUB_IDS`; every other character of a block runs as written, in a fresh namespace and a fresh working folder, so
a block defines every name it uses. New blocks are picked up automatically; a block that must not run is fenced as
``python no-run`` (none is today).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]

#: Hub id (as written in the docs, quotes included) -> the tiny-factory call that replaces it (a local folder).
HUB_IDS = {
    '"meta-llama/Llama-3.2-1B"': 'tiny_hub("causal_lm")',
    '"stable-diffusion-v1-5/stable-diffusion-v1-5"': 'tiny_hub("stable_diffusion")',
    '"sentence-transformers/paraphrase-multilingual-MiniLM-L12-v2"': 'tiny_hub("sentence_encoder")',
    '"google-bert/bert-base-uncased"': 'tiny_hub("sentence_encoder")',
}

_FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.S | re.M)


def _blocks() -> list[tuple[str, str]]:
    blocks = []
    for path in DOCS:
        text = path.read_text(encoding="utf-8")
        for match in _FENCE.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            heading = [h for h in re.findall(r"^#+ (.+)$", text[: match.start()], re.M)][-1:] or ["top"]
            slug = re.sub(r"[^a-z0-9]+", "-", heading[0].lower()).strip("-")
            blocks.append((f"{path.relative_to(ROOT)}:{line}:{slug}", match.group(1)))
    return blocks


BLOCKS = _blocks()


def test_the_docs_have_python_blocks():
    assert len(BLOCKS) >= 10, f"found only {len(BLOCKS)} python blocks in {[str(p) for p in DOCS]}"


@pytest.fixture(scope="session")
def tiny_hub(tmp_path_factory):
    """``tiny_hub(kind)`` -> a local folder standing in for a Hub repo (built once per session)."""
    root = tmp_path_factory.mktemp("tiny_hub")
    made: dict[str, str] = {}

    def build(kind: str) -> str:
        if kind in made:
            return made[kind]
        path = root / kind
        if kind == "causal_lm":
            from hf_ext.testing import tiny_causal_lm, tiny_tokenizer

            tiny_causal_lm("llama", seed=0).save_pretrained(path)
            tiny_tokenizer().save_pretrained(path)
        elif kind == "stable_diffusion":
            from diffusers import StableDiffusionPipeline

            from hf_ext.testing import tiny_sd_components

            parts = {"safety_checker": None, "feature_extractor": None, "requires_safety_checker": False,
                     **tiny_sd_components(seed=0)}
            StableDiffusionPipeline(**parts).save_pretrained(path)
        elif kind == "sentence_encoder":  # a plain BERT checkpoint: sentence-transformers adds mean pooling
            import torch
            from transformers import BertConfig, BertModel

            from hf_ext.testing import tiny_tokenizer

            torch.manual_seed(0)
            BertModel(BertConfig(vocab_size=128, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                 intermediate_size=64, max_position_embeddings=128, pad_token_id=0),
                      add_pooling_layer=False).save_pretrained(path)
            tok = tiny_tokenizer()
            tok.model_max_length, tok.padding_side = 120, "right"
            tok.save_pretrained(path)
        else:
            raise ValueError(f"tiny_hub: unknown kind {kind!r}")
        made[kind] = str(path)
        return made[kind]

    return build


def substitute(code: str) -> str:
    for hub_id, call in HUB_IDS.items():
        code = code.replace(hub_id, call)
    return code


@pytest.mark.docs
@pytest.mark.parametrize("block", [code for _, code in BLOCKS], ids=[name for name, _ in BLOCKS])
def test_block_runs(block, tiny_hub, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # blocks write files (adapters, HTML, plots) into the working folder
    code = compile(substitute(block), "<docs block>", "exec")
    namespace = {"__name__": "__readme__", "tiny_hub": tiny_hub}
    exec(code, namespace)  # noqa: S102 - the docs' own examples


def test_substitution_changes_only_hub_ids():
    sample = 'm = AutoModel.from_pretrained("meta-llama/Llama-3.2-1B")  # "meta-llama/Llama-3.2-1B"'
    assert substitute(sample) == 'm = AutoModel.from_pretrained(tiny_hub("causal_lm"))  # tiny_hub("causal_lm")'
    assert all(call.startswith("tiny_hub(") for call in HUB_IDS.values())
