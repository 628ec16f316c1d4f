"""Reading-comprehension prompts for a model: rendering, sentence positions, the greedy-correctness filter, deletion.

:class:`QAFormat` renders a :class:`~hf_ext.reproduce.reading.ReadingItem` for a tokenizer: through its chat template
when it has one (``"<passage>\\n<question> Answer with one word."`` as the user turn) or as plain text
(``"<passage>\\nQuestion: <question>\\nAnswer:"``), and knows where each passage sentence sits in the rendered
prompt, so every method is scored on the same sentences.

Small models seldom answer with the bare word ("Ben works as a farmer."), so :meth:`QAFormat.greedy_answers` lets the
model answer greedily and keeps an item when the answer word is the first value of the asked relation in the reply;
the reply up to the answer joins the prompt (``answer_prefix``) and the answer's tokens are the explained target.

Example:
    >>> from hf_ext.testing import tiny_tokenizer
    >>> from hf_ext.reproduce.reading import generate_items
    >>> fmt = QAFormat(tiny_tokenizer())
    >>> prep = fmt.prepare(generate_items(1, seed=0)[0])
    >>> len(prep.sentence_positions) == len(prep.item.sentences)
    True
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from hf_ext.core.inputs import prepare_batch

from .reading import ReadingItem

INSTRUCTION = "Answer with one word."


@dataclass
class PreparedItem:
    """One item rendered and tokenised for a model.

    Attributes:
        item: the item.
        prompt: the rendered prompt followed by ``answer_prefix``.
        answer_prefix: the model's reply before the answer (``""`` when it answers with the bare word).
        target: the answer as the model writes it (e.g. ``" farmer"``).
        prompt_ids, target_ids: their token ids.
        offsets: ``[(start, end)]`` character offsets of the prompt tokens.
        sentence_spans: ``[(start, end)]`` of each passage sentence in ``prompt``.
        sentence_positions: prompt token positions of each sentence (a token belongs to the sentence it overlaps).
        template: ``prompt`` with one ``{}`` per sentence (each sentence with its trailing space), other braces
            doubled: the form Captum's ``TextTemplateInput`` takes.
        template_values: the values that fill ``template`` back into ``prompt``.
    """

    item: ReadingItem
    prompt: str
    answer_prefix: str
    target: str
    prompt_ids: list[int]
    target_ids: list[int]
    offsets: list[tuple[int, int]]
    sentence_spans: list[tuple[int, int]]
    sentence_positions: list[list[int]]
    template: str
    template_values: list[str]

    @property
    def passage_positions(self) -> list[int]:
        """Prompt positions of all passage tokens."""
        return sorted({p for pos in self.sentence_positions for p in pos})


class QAFormat:
    """How items are shown to a model.

    Args:
        tokenizer: a fast tokenizer (offsets needed).
        chat: use the chat template (default: when the tokenizer has one).
    """

    def __init__(self, tokenizer, chat: bool | None = None):
        if not getattr(tokenizer, "is_fast", False):
            raise TypeError(f"QAFormat needs a fast tokenizer (character offsets), got {type(tokenizer).__name__}")
        self.tokenizer = tokenizer
        self.chat = bool(getattr(tokenizer, "chat_template", None)) if chat is None else bool(chat)
        if self.chat and not getattr(tokenizer, "chat_template", None):
            raise ValueError(f"chat=True but {type(tokenizer).__name__} has no chat template")

    @property
    def add_special_tokens(self) -> bool:
        """Whether the tokenizer adds its specials (plain text) or the template already holds them (chat)."""
        return not self.chat

    def render(self, sentences: Sequence[str], question: str) -> tuple[str, list[tuple[int, int]]]:
        """The prompt for ``sentences`` and ``question``, and each sentence's character span in it."""
        passage = " ".join(sentences)
        if self.chat:
            prompt = self.tokenizer.apply_chat_template(
                [{"role": "user", "content": f"{passage}\n{question} {INSTRUCTION}"}], tokenize=False,
                add_generation_prompt=True)
        else:
            prompt = f"{passage}\nQuestion: {question}\nAnswer:"
        start = prompt.find(passage) if passage else 0
        if start < 0:
            raise ValueError("the chat template changed the passage text; use chat=False")
        spans, pos = [], start
        for s in sentences:
            spans.append((pos, pos + len(s)))
            pos += len(s) + 1
        return prompt, spans

    def encode(self, prompt: str) -> tuple[list[int], list[tuple[int, int]]]:
        enc = self.tokenizer(prompt, add_special_tokens=self.add_special_tokens, return_offsets_mapping=True)
        return list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]

    def prepare(self, item: ReadingItem, answer_prefix: str = "", target: str | None = None) -> PreparedItem:
        """Render and tokenise ``item``; the prompt ends with ``answer_prefix`` and the target is ``target``
        (default: ``" " + answer`` for plain text, the bare answer after a chat template)."""
        rendered, spans = self.render(item.sentences, item.question)
        prompt = rendered + answer_prefix
        ids, offsets = self.encode(prompt)
        if target is None:
            target = item.answer if self.chat else " " + item.answer
        target_ids = list(self.tokenizer(target, add_special_tokens=False)["input_ids"])
        if not target_ids:
            raise ValueError(f"target {target!r} tokenises to nothing")
        positions = [[i for i, (ts, te) in enumerate(offsets) if te > ts and te > s and ts < e] for s, e in spans]
        if any(not p for p in positions):
            raise ValueError(f"a sentence of {item.sentences!r} has no tokens in the rendered prompt")
        pieces, values, last = [], [], 0
        for k, (s, e) in enumerate(spans):
            end = e + 1 if k + 1 < len(spans) else e  # the separating space goes with its sentence
            pieces.append(prompt[last:s].replace("{", "{{").replace("}", "}}"))
            values.append(prompt[s:end])
            last = end
        template = "{}".join(pieces) + "{}" + prompt[last:].replace("{", "{{").replace("}", "}}")
        return PreparedItem(item=item, prompt=prompt, answer_prefix=answer_prefix, target=target, prompt_ids=ids,
                            target_ids=target_ids, offsets=offsets, sentence_spans=spans, sentence_positions=positions,
                            template=template, template_values=values)

    @torch.no_grad()
    def greedy_answers(self, model, items: Sequence[ReadingItem], *, max_new_tokens: int = 12,
                       batch_size: int = 16) -> list[tuple[str, str] | None]:
        """Answer every item greedily; per item ``(answer_prefix, target)`` when the answer word is the first value
        of the asked relation in the reply (before its first line break), else ``None``."""
        from .reading import RELATIONS

        tok = self.tokenizer
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        prompts = [self.render(it.sentences, it.question)[0] for it in items]
        ids = [self.encode(p)[0] for p in prompts]
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        out: list[tuple[str, str] | None] = [None] * len(items)
        for k in range(0, len(order), batch_size):
            rows = order[k : k + batch_size]
            batch = prepare_batch(model, [ids[i] for i in rows], pad_token_id=pad)
            width = batch["input_ids"].shape[1]
            gen = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                                 num_beams=1, temperature=None, top_p=None, top_k=None, pad_token_id=pad)
            for r, i in enumerate(rows):
                out[i] = _locate_answer(tok, gen[r, width:].tolist(), items[i].answer,
                                        RELATIONS[items[i].relation][0])
        return out

    @torch.no_grad()
    def target_logprobs(self, model, prompts: Sequence[str], targets: Sequence[Sequence[int]],
                        batch_size: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher-forced ``log p`` of each target (``[N, T]``, NaN past a row's end) and whether greedy decoding
        reproduces it (``[N]`` bool: the argmax equals the target at every position).

        Rows are sorted by length before batching so that padding stays small.
        """
        from hf_ext.core.scoring import teacher_forced_logprobs

        ids = [self.encode(p)[0] for p in prompts]
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        width = max(len(t) for t in targets)
        logp = torch.full((len(ids), width), float("nan"))
        correct = torch.zeros(len(ids), dtype=torch.bool)
        for k in range(0, len(order), batch_size):
            rows = order[k : k + batch_size]
            s = teacher_forced_logprobs(model, [ids[i] for i in rows], [list(targets[i]) for i in rows])
            lp = s.logprobs.float().cpu()
            logp[rows, : lp.shape[1]] = lp
            correct[rows] = ((s.predicted_ids == s.token_ids) | ~s.mask).all(1).cpu()
        return logp, correct


def _locate_answer(tok, generated: list[int], answer: str, values: Sequence[str]) -> tuple[str, str] | None:
    """``(text before the answer's first token, the answer's tokens as text)`` in a greedy reply, or ``None``."""
    text = tok.decode(generated, skip_special_tokens=True).split("\n")[0]
    found = {v: m.start() for v in values if (m := re.search(rf"\b{re.escape(v)}\b", text))}
    if answer not in found or min(found.values()) != found[answer]:
        return None
    start, end = found[answer], found[answer] + len(answer)
    j0 = j1 = None
    for j in range(len(generated) + 1):
        n = len(tok.decode(generated[:j], skip_special_tokens=True))
        if n <= start:
            j0 = j
        if n >= end:
            j1 = j
            break
    if j0 is None or j1 is None or j1 <= j0:
        return None
    return tok.decode(generated[:j0], skip_special_tokens=True), tok.decode(generated[j0:j1], skip_special_tokens=True)


def deletion_curves(model, fmt: QAFormat, prep: PreparedItem, orders: dict[str, Sequence[int]],
                    batch_size: int = 8) -> dict[str, list[float]]:
    """Deletion curves: for each method's sentence order, the target's relative probability ``p_k / p_0`` after
    removing its ``k`` first sentences from the passage text (``k = 0 … S``; ``p`` = geometric mean per-token
    probability). Subsets shared between methods are scored once.

    Returns:
        ``{method: [S + 1] floats}``.
    """
    item = prep.item
    S = len(item.sentences)
    subsets: dict[frozenset, int] = {}
    for order in orders.values():
        if sorted(order) != list(range(S)):
            raise ValueError(f"order {list(order)} is not a permutation of range({S})")
        for k in range(S + 1):
            subsets.setdefault(frozenset(order[:k]), len(subsets))
    keys = list(subsets)
    prompts = [fmt.render([s for j, s in enumerate(item.sentences) if j not in removed], item.question)[0]
               + prep.answer_prefix for removed in keys]
    logp, _ = fmt.target_logprobs(model, prompts, [prep.target_ids] * len(prompts), batch_size)
    mean_lp = logp.nanmean(1)
    base = float(mean_lp[subsets[frozenset()]])
    return {m: [float(torch.exp(mean_lp[subsets[frozenset(order[:k])]] - base)) for k in range(S + 1)]
            for m, order in orders.items()}


def curve_auc(curve: Sequence[float]) -> float:
    """Trapezoid area under a deletion curve over the removed fraction ``k / S`` in ``[0, 1]`` (lower = more
    faithful: the probability falls faster).

    Example:
        >>> curve_auc([1.0, 0.0, 0.0])
        0.25
    """
    n = len(curve) - 1
    if n < 1:
        raise ValueError("a deletion curve needs at least two points")
    return float(sum((a + b) / 2 for a, b in zip(curve, curve[1:])) / n)


def rank_of(scores: torch.Tensor, index: int) -> float:
    """Mid-rank (1 = highest) of ``scores[index]``; ties share the mean of their ranks.

    Example:
        >>> rank_of(torch.tensor([0.1, 0.5, 0.5]), 1)
        1.5
    """
    v = scores[index]
    return 1.0 + float((scores > v).sum()) + float((scores == v).sum() - 1) / 2
