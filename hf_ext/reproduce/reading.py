"""A seeded reading-comprehension generator: short passages of fact sentences, a question, the one-word answer.

Every passage holds exactly one *evidence* sentence that answers the question and distractor sentences of three
kinds, so that neither "the sentence that mentions the question's entity" nor "the sentence that holds an answer
of the right type" gives the evidence away (attention and random baselines cannot win on surface cues):

* ``entity``: the question's entity with another relation (``"Ben works as a baker."``);
* ``same_type``: another entity with the question's relation (``"Anna lives in Rome."``);
* ``decoy``: the question's entity together with a same-type answer in another frame (``"Ben once visited Rome."``).

Names, relations and values are drawn from word lists written here (no copied prose), without repeats inside a
passage, and the sentence order is shuffled; ``random.Random(seed)`` makes the set a pure function of its
arguments.

Example:
    >>> items = generate_items(3, seed=0)
    >>> item = items[0]
    >>> item.sentences[item.evidence].count(item.answer)
    1
    >>> len({it.question for it in generate_items(50, seed=1)}) > 10
    True
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass

NAMES = ("Anna", "Ben", "Clara", "David", "Emma", "Felix", "Grace", "Henry", "Iris", "Jack", "Laura", "Marco", "Nina",
         "Oscar", "Paula", "Ryan", "Sara", "Tom", "Vera", "Will", "Alice", "Peter", "Lucy", "Frank", "Helen", "Mark",
         "Julia", "Simon", "Kate", "Daniel")

# relation -> (values, fact template, decoy template, question templates)
RELATIONS: dict[str, tuple[tuple[str, ...], str, str, tuple[str, ...]]] = {
    "city": (("Paris", "Rome", "Berlin", "Madrid", "Vienna", "London", "Oslo", "Prague", "Dublin", "Lisbon", "Athens",
              "Warsaw", "Boston", "Tokyo", "Cairo", "Sydney"),
             "{e} lives in {v}.", "{e} once visited {v} on a holiday.",
             ("In which city does {e} live?", "Where does {e} live?")),
    "job": (("baker", "doctor", "teacher", "pilot", "farmer", "lawyer", "nurse", "painter", "chef", "dentist", "plumber",
             "writer", "engineer", "butcher"),
            "{e} works as {a} {v}.", "{e} would never want to be {a} {v}.",
            ("What is {e}'s job?", "What does {e} work as?")),
    "pet": (("dog", "cat", "rabbit", "parrot", "horse", "hamster", "turtle", "goat", "snake", "pony", "duck"),
            "{e} has a pet {v}.", "{e} is afraid of the neighbour's {v}.",
            ("What pet does {e} have?", "Which animal is {e}'s pet?")),
    "colour": (("red", "blue", "green", "yellow", "black", "white", "orange", "purple", "pink", "brown", "grey"),
               "{e} drives {a} {v} car.", "{e} painted the garden fence {v}.",
               ("What colour is {e}'s car?", "Which colour is the car that {e} drives?")),
    "instrument": (("piano", "guitar", "violin", "drums", "flute", "trumpet", "cello", "harp", "saxophone", "organ"),
                   "{e} plays the {v}.", "{e} carried the {v} for a friend.",
                   ("Which instrument does {e} play?", "What instrument does {e} play?")),
    "sport": (("tennis", "football", "golf", "hockey", "chess", "cricket", "rugby", "baseball", "volleyball", "boxing"),
              "{e}'s favourite sport is {v}.", "{e} watched {v} on television once.",
              ("What is {e}'s favourite sport?", "Which sport does {e} like best?")),
}
DISTRACTOR_KINDS = ("entity", "same_type", "decoy")


@dataclass(frozen=True)
class ReadingItem:
    """One question over a passage.

    Attributes:
        sentences: the passage's fact sentences, in order.
        evidence: index of the sentence that answers the question.
        kinds: per sentence ``"evidence"`` or a distractor kind of :data:`DISTRACTOR_KINDS`.
        question: the question.
        answer: the one-word answer (it occurs in the evidence sentence).
        entity, relation: what is asked.
    """

    sentences: tuple[str, ...]
    evidence: int
    kinds: tuple[str, ...]
    question: str
    answer: str
    entity: str
    relation: str

    @property
    def passage(self) -> str:
        """The sentences joined by single spaces."""
        return " ".join(self.sentences)

    def to_dict(self) -> dict:
        return asdict(self)


def generate_items(n: int, *, seed: int = 0, min_sentences: int = 4, max_sentences: int = 7) -> list[ReadingItem]:
    """``n`` seeded reading-comprehension items.

    Args:
        n: number of items (>= 1).
        seed: the generator's seed; the same arguments give the same items.
        min_sentences, max_sentences: passage length range (inclusive), at least 3 (evidence + one distractor of
            each of two kinds); every passage has at least one ``entity`` and one ``same_type`` distractor.

    Returns:
        ``n`` :class:`ReadingItem`.

    Example:
        >>> [len(it.sentences) for it in generate_items(4, seed=3, min_sentences=3, max_sentences=3)]
        [3, 3, 3, 3]
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an int >= 1, got {n!r}")
    if not (isinstance(min_sentences, int) and isinstance(max_sentences, int) and 3 <= min_sentences <= max_sentences):
        raise ValueError(f"need 3 <= min_sentences <= max_sentences, got min_sentences={min_sentences!r}, "
                         f"max_sentences={max_sentences!r}")
    if max_sentences > len(RELATIONS) + len(NAMES) - 2:
        raise ValueError(f"max_sentences={max_sentences} exceeds what the word lists support")
    rng = random.Random(seed)
    return [_item(rng, rng.randint(min_sentences, max_sentences)) for _ in range(n)]


def _fill(template: str, entity: str, value: str) -> str:
    return template.format(e=entity, v=value, a="an" if value[0] in "aeiou" else "a")


def _item(rng: random.Random, length: int) -> ReadingItem:
    relation = rng.choice(sorted(RELATIONS))
    values, fact, _, questions = RELATIONS[relation]
    entity = rng.choice(NAMES)
    answer = rng.choice(values)
    used_values = {relation: {answer}}
    others = [n for n in NAMES if n != entity]
    rng.shuffle(others)
    other_relations = [r for r in sorted(RELATIONS) if r != relation]
    rng.shuffle(other_relations)

    def fresh(rel: str) -> str:
        pool = [v for v in RELATIONS[rel][0] if v not in used_values.setdefault(rel, set())]
        v = rng.choice(pool)
        used_values[rel].add(v)
        return v

    kinds = ["entity", "same_type"] + [rng.choice(DISTRACTOR_KINDS) for _ in range(length - 3)]
    sentences = [(_fill(fact, entity, answer), "evidence")]
    for kind in kinds:
        if kind == "entity" and other_relations:
            rel = other_relations.pop()
            sentences.append((_fill(RELATIONS[rel][1], entity, fresh(rel)), kind))
        elif kind == "decoy":
            sentences.append((_fill(RELATIONS[relation][2], entity, fresh(relation)), kind))
        else:
            sentences.append((_fill(fact, others.pop(), fresh(relation)), "same_type"))
    rng.shuffle(sentences)
    evidence = next(i for i, (_, k) in enumerate(sentences) if k == "evidence")
    return ReadingItem(sentences=tuple(s for s, _ in sentences), evidence=evidence, kinds=tuple(k for _, k in sentences),
                       question=rng.choice(questions).format(e=entity), answer=answer, entity=entity, relation=relation)
