"""The toy SCAR corpus: concept and neutral word lists, seeded sentences, a word-level tokenizer, concept-word rate.

Sentences ``"the W1 and the W2 and the W3 ."`` whose words come either all from :data:`CONCEPT_WORDS` (label 1, the
"marked concept") or all from :data:`NEUTRAL_WORDS` (label 0). Used by the toy experiment
(:mod:`hf_ext.scar.toy`) and its evaluation (:func:`concept_word_rate`).

Example:
    >>> texts, labels = concept_corpus(4, seed=0)
    >>> labels, concept_word_rate(["the hate and the cat ."])
    ([0, 0, 0, 0], 0.5)
"""

from __future__ import annotations

import random
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

__all__ = ["CONCEPT_WORDS", "NEUTRAL_WORDS", "concept_corpus", "concept_word_rate", "toy_tokenizer"]

#: The marked concept's words (label 1) and the neutral words (label 0); first letters differ between the lists.
CONCEPT_WORDS: tuple[str, ...] = ("hate", "kill", "doom", "evil", "gore", "war")
NEUTRAL_WORDS: tuple[str, ...] = ("cat", "sun", "tree", "milk", "book", "pen")


def concept_corpus(n: int, *, seed: int = 0, p_concept: float = 0.5, words_per_sentence: int = 3
                   ) -> tuple[list[str], list[int]]:
    """``n`` seeded sentences and labels (1 = concept words, 0 = neutral words)."""
    rng = random.Random(seed)
    texts, labels = [], []
    for _ in range(n):
        label = int(rng.random() < p_concept)
        words = CONCEPT_WORDS if label else NEUTRAL_WORDS
        texts.append(" and ".join(f"the {rng.choice(words)}" for _ in range(words_per_sentence)) + " .")
        labels.append(label)
    return texts, labels


def toy_tokenizer() -> PreTrainedTokenizerFast:
    """A word-level fast tokenizer over the toy vocabulary (``<pad> <s> </s> <unk>``, fillers, the two word lists);
    prepends ``<s>``, pads on the left, decodes with spaces."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    words = ["<pad>", "<s>", "</s>", "<unk>", "the", "and", ".", *CONCEPT_WORDS, *NEUTRAL_WORDS]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   pad_token="<pad>", padding_side="left")


def concept_word_rate(texts: list[str]) -> float:
    """Share of concept words among the known (concept or neutral) words in ``texts`` (NaN if there are none)."""
    n_concept = n_known = 0
    for text in texts:
        for word in re.findall(r"[a-z]+", text):
            if word in CONCEPT_WORDS:
                n_concept += 1
                n_known += 1
            elif word in NEUTRAL_WORDS:
                n_known += 1
    return n_concept / n_known if n_known else float("nan")
