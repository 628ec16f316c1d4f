"""``hf-ext reproduce tfree``: T-FREE (v = 8k) vs BPE at small scale, same backbone, same text, same steps.

Text: the Python documentation that ships with CPython, so every install has it — the Language Reference's topic
pages (``pydoc_data.topics``) and the docstrings of a fixed list of standard-library modules (PSF License 2.0;
technical English with code; it varies slightly with the Python version, which the report records). Documents are
split 90/10 by a hash of their text into training and held-out documents.

Arms, each trained from scratch with the same Llama backbone, the same text chunks in the same order, the same steps,
optimiser and schedule (seeds ≥ 2 in the full run):

* **T-FREE**: ``v = 8000`` hashed rows, ``m = 10`` per trigram (the paper's 8k setting), sparse BCE;
* **BPE** (ByteLevel, ``tokenizers``) trained on the training documents with targets 8k, 32k and 64k — the text
  supports fewer entries than the larger targets, so the arms are the distinct sizes reached (reported).

Metrics on the held-out documents:

* **next-word top-1 accuracy** (primary; words = letter runs that follow a space): BPE by greedy decoding until the
  word ends (teacher-forced argmax while it agrees with the word, plus the boundary check; real greedy generation
  where a different segmentation could still spell the word); T-FREE by the argmax over a **closed dictionary** of
  every T-FREE word in the training and held-out documents (its own decode scores; also the pattern likelihood);
* **bits per byte**: BPE's cross-entropy; T-FREE's word probability normalised over the same closed dictionary,
  ``p(w) = softmax_w(Σ_{j ∈ P(w)} x_j)`` — the multi-label head's independent-Bernoulli likelihood of the word's
  activation pattern ``P(w)``, renormalised over the dictionary (closed-vocabulary: not comparable in kind with
  BPE's open vocabulary, which can spell any string);
* embedding + head parameters, fertility (units per whitespace word), training time.

Example:
    >>> report = run("python-docs", quick=True)  # trains T-FREE for minutes on CPU  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import math
import re
import statistics
import sys
import time
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import torch

from hf_ext.utils.logging import get_logger

from .report import Report, Table

logger = get_logger(__name__)

DEFAULT_MODEL = "python-docs"
EOT = "<|endoftext|>"
#: Standard-library modules whose docstrings join the help topics (the T-FREE tokenizer benchmark's corpus).
MODULES = ("abc", "argparse", "asyncio", "base64", "bisect", "calendar", "collections", "concurrent.futures", "csv",
           "dataclasses", "datetime", "decimal", "difflib", "email", "enum", "fractions", "functools", "gzip",
           "hashlib", "heapq", "html", "http.client", "inspect", "io", "ipaddress", "itertools", "json", "logging",
           "mailbox", "math", "multiprocessing", "operator", "os", "pathlib", "pickle", "pprint", "random", "re",
           "sched", "shutil", "socket", "sqlite3", "statistics", "string", "subprocess", "tarfile", "tempfile",
           "textwrap", "threading", "timeit", "tokenize", "traceback", "typing", "unittest", "urllib.parse", "uuid",
           "warnings", "xml.etree.ElementTree", "zipfile")
SOURCE = ("CPython's documentation shipped with Python: pydoc_data.topics (Language Reference topics) and the "
          "docstrings of 59 standard-library modules; PSF License 2.0")


@dataclass(frozen=True)
class Settings:
    """What a run measures.

    Attributes:
        hidden_size, num_layers, num_heads, intermediate_size: the Llama backbone (shared by every arm).
        hash_vocab_size, num_activations: T-FREE's ``v`` and ``m``.
        bpe_targets: BPE vocabulary targets (arms: the distinct sizes the text supports).
        steps, batch_size, chunk_words, lr, warmup: training (AdamW, cosine to 10 %, gradient clip 1.0).
        seeds: one model per seed and arm.
        eval_docs: held-out documents evaluated (``None``: all); eval_words: truncate each to this many words.
        max_docs: documents used in all (``None``: all).
    """

    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    intermediate_size: int = 352
    hash_vocab_size: int = 8000
    num_activations: int = 10
    bpe_targets: tuple[int, ...] = (8000, 32000, 64000)
    steps: int = 600
    batch_size: int = 8
    chunk_words: int = 32
    lr: float = 2e-3
    warmup: int = 60
    seeds: tuple[int, ...] = (0, 1)
    eval_docs: int | None = 60
    eval_words: int = 200
    max_docs: int | None = None


FULL = Settings()
QUICK = Settings(hidden_size=64, num_layers=2, num_heads=2, intermediate_size=128, steps=12, batch_size=4,
                 chunk_words=24, warmup=2, seeds=(0,), bpe_targets=(8000,), eval_docs=4, eval_words=60, max_docs=120)


_PYTHON_DOCS_SCRIPT = """
import importlib, inspect, json, sys
from pydoc_data.topics import topics
docs = [topics[k] for k in sorted(topics)]
for name in json.loads(sys.argv[1]):
    try:
        mod = importlib.import_module(name)
    except ImportError:
        continue
    seen = set()
    for obj in [mod, *[getattr(mod, a) for a in sorted(dir(mod)) if not a.startswith("_")]]:
        doc = inspect.getdoc(obj) if (inspect.ismodule(obj) or inspect.isclass(obj) or callable(obj)) else None
        if doc and doc not in seen:
            seen.add(doc)
            docs.append(doc)
sys.stdout.write(json.dumps(docs))
"""


def python_docs() -> list[str]:
    """CPython's documentation as shipped: help topics (sorted by name), then each module's docstrings (module, then its
    public names in sorted order; a docstring repeated within a module once). The T-FREE tokenizer benchmark's text.

    Collected in a fresh, isolated interpreter: a module's public names include the submodules imported so far, so
    the text would otherwise depend on what the calling process imported before.

    Example:
        >>> docs = python_docs()
        >>> len(docs) > 1000 and docs[0].startswith('The "assert" statement')
        True
    """
    import json
    import subprocess

    proc = subprocess.run([sys.executable, "-I", "-c", _PYTHON_DOCS_SCRIPT, json.dumps(MODULES)], capture_output=True,
                          text=True, encoding="utf-8", check=True)
    return json.loads(proc.stdout)


def documents(max_docs: int | None = None) -> list[str]:
    """The corpus: :func:`python_docs`, stripped, each distinct text once, in order (the first ``max_docs``)."""
    docs = list(dict.fromkeys(d.strip() for d in python_docs() if d.strip()))
    return docs[:max_docs] if max_docs else docs


def split_documents(docs: list[str], heldout: float = 0.1) -> tuple[list[str], list[str]]:
    """``(train, held-out)``: a document is held out when the hash of its text falls in the last ``heldout``."""
    def h(d: str) -> float:
        return int.from_bytes(hashlib.sha256(d.encode("utf-8")).digest()[:8], "little") / 2**64

    return [d for d in docs if h(d) >= heldout], [d for d in docs if h(d) < heldout]


def chunks(docs: list[str], words: int) -> list[tuple[str, bool]]:
    """Documents cut into pieces of at most ``words`` whitespace words (exact text); ``True`` marks a document start."""
    out = []
    for d in docs:
        spans = [m.start() for m in re.finditer(r"\S+", d)]
        for i in range(0, len(spans), words):
            end = spans[i + words] if i + words < len(spans) else len(d)
            out.append((d[spans[i] if i else 0:end], i == 0))
    return out


def target_words(text: str) -> list[tuple[int, str]]:
    """``(char offset, word)`` of the next-word targets: letter runs preceded by a space (and not at offset 0)."""
    return [(m.start(), m.group()) for m in re.finditer(r"[^\W\d_]+", text) if m.start() > 0 and text[m.start() - 1] == " "]


def backbone_config(settings: Settings, vocab: int = 16):
    """The shared Llama backbone (``vocab`` only matters for the BPE arms' embedding and head)."""
    from transformers import LlamaConfig

    return LlamaConfig(hidden_size=settings.hidden_size, intermediate_size=settings.intermediate_size,
                       num_hidden_layers=settings.num_layers, num_attention_heads=settings.num_heads,
                       num_key_value_heads=settings.num_heads, max_position_embeddings=1024, vocab_size=vocab,
                       tie_word_embeddings=False)


# ------------------------------------------------------------------------------------------------------ the arms


class TFreeArm:
    """A T-FREE model over the shared backbone, with the closed dictionary of the corpus' words."""

    kind = "tfree"

    def __init__(self, settings: Settings, seed: int, dictionary_texts: list[str]):
        from hf_ext.tfree import TFreeConfig, TFreeForCausalLM, TFreeTokenizer

        self.tok = TFreeTokenizer(hash_vocab_size=settings.hash_vocab_size, num_activations=settings.num_activations)
        # the closed decode dictionary: every word of the training and held-out documents
        self.tok.add_words(w for t in dictionary_texts for w in self.tok.tokenize(t))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.model = TFreeForCausalLM(TFreeConfig(text_config=backbone_config(settings),
                                                      hash_vocab_size=settings.hash_vocab_size,
                                                      num_activations=settings.num_activations))
        self.model.set_decode_dictionary(self.tok)
        self.eot = self.tok.word_pattern(EOT).tolist()
        self.name = f"T-FREE v={settings.hash_vocab_size}"
        self.vocab = settings.hash_vocab_size

    def batch(self, pieces: list[tuple[str, bool]]) -> dict[str, torch.Tensor]:
        flat = self.tok.encode_activations([t for t, _ in pieces], format="flat")["activation_ids"]
        docs = [([self.eot] if start else []) + words for (_, start), words in zip(pieces, flat)]
        from hf_ext.tfree.training import TFreeDataCollator

        return TFreeDataCollator()([{"activation_ids": d} for d in docs])

    def units(self, text: str) -> int:
        return len(self.tok.tokenize(text))

    @torch.no_grad()
    def evaluate(self, text: str) -> dict[str, Any]:
        """Closed-dictionary NLL (nats) of every word and next-word predictions at the targets."""
        words = self.tok.tokenize(text)
        ids = torch.tensor([[self.tok.convert_tokens_to_ids(EOT)] + self.tok.convert_tokens_to_ids(words)])
        out = self.model(input_ids=ids, return_activation_logits=True)
        decode_pred = out.logits[0].argmax(-1)  # the model's own decode scores
        x = out.activation_logits[0].float()  # [W+1, v]
        m = self.model
        csr = torch.sparse_csr_tensor(m.dict_indptr, m.dict_indices, torch.ones(m.dict_indices.numel()),
                                      size=(m.dictionary_size, self.vocab))
        lik = (csr @ x.T).T.log_softmax(-1)  # [W+1, d]: log p(word | context) over the closed dictionary
        nll = -float(lik[:-1].gather(1, ids[0, 1:, None]).sum())
        lik_pred = lik.argmax(-1)
        hits = {"decode": [], "likelihood": []}
        for c, word in target_words(text):
            n = len(self.tok.tokenize(text[: c - 1]))
            if n >= len(words) or words[n] != word:
                continue
            target = int(ids[0, n + 1])
            hits["decode"].append(int(decode_pred[n]) == target)
            hits["likelihood"].append(int(lik_pred[n]) == target)
        return {"nll": nll, "units": len(words), "hits": hits}


class BPEArm:
    """A ByteLevel BPE (trained on the training documents) over the shared backbone."""

    kind = "bpe"

    def __init__(self, settings: Settings, seed: int, tokenizer):
        self.tok = tokenizer
        self.vocab = tokenizer.get_vocab_size()
        self.eot_id = tokenizer.token_to_id(EOT)
        from transformers import LlamaForCausalLM

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.model = LlamaForCausalLM(backbone_config(settings, self.vocab))
        self.name = f"BPE {self.vocab:,}"
        self._letter = {i: bool(re.match(r"[^\W\d_]", tokenizer.decode([i]))) for i in range(self.vocab)}

    def batch(self, pieces: list[tuple[str, bool]]) -> dict[str, torch.Tensor]:
        encs = self.tok.encode_batch([t for t, _ in pieces])
        seqs = [([self.eot_id] if start else []) + e.ids for (_, start), e in zip(pieces, encs)]
        width = max(map(len, seqs))
        ids = torch.zeros(len(seqs), width, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for b, s in enumerate(seqs):
            ids[b, : len(s)], mask[b, : len(s)] = torch.tensor(s), 1
        return {"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(mask == 0, -100)}

    def units(self, text: str) -> int:
        return len(self.tok.encode(text).ids)

    def _greedy_word(self, prefix: list[int], max_tokens: int = 12) -> str:
        """Greedy decoding after ``prefix`` until the word ends (a token starting with a non-letter, or EOT)."""
        ids, out = list(prefix), []
        for _ in range(max_tokens):
            nxt = int(self.model(input_ids=torch.tensor([ids])).logits[0, -1].argmax())
            if nxt == self.eot_id or (out and not self._letter[nxt]):
                break
            out.append(nxt)
            ids.append(nxt)
        return self.tok.decode(out).strip()

    @torch.no_grad()
    def evaluate(self, text: str) -> dict[str, Any]:
        enc = self.tok.encode(text)
        ids = torch.tensor([[self.eot_id] + enc.ids])
        logits = self.model(input_ids=ids).logits[0].float()
        nll = float(torch.nn.functional.cross_entropy(logits[:-1], ids[0, 1:], reduction="sum"))
        pred = logits.argmax(-1)  # pred[p] predicts ids[p + 1]
        starts: dict[int, int] = {}
        for i, (start, _) in enumerate(enc.offsets):
            starts.setdefault(start, i)
        hits = []
        for c, word in target_words(text):
            t0 = starts.get(c - 1)  # the word's first token carries the space before it (ByteLevel)
            if t0 is None:
                continue
            t1 = t0
            while t1 < len(enc.offsets) and enc.offsets[t1][1] < c + len(word):
                t1 += 1
            if t1 >= len(enc.offsets) or enc.offsets[t1][1] != c + len(word):
                continue
            # sequence positions are shifted by the leading EOT: token t is ids[0, t + 1], predicted at t
            ok = all(int(pred[t]) == int(ids[0, t + 1]) for t in range(t0, t1 + 1))
            if ok:
                nxt = int(pred[t1 + 1])
                ok = nxt == self.eot_id or not self._letter[nxt]
            else:
                first_bad = next(t for t in range(t0, t1 + 1) if int(pred[t]) != int(ids[0, t + 1]))
                spelled = self.tok.decode(ids[0, t0 + 1: first_bad + 1].tolist() + [int(pred[first_bad])]).strip()
                if word.startswith(spelled) and spelled:  # another segmentation may still spell the word
                    ok = self._greedy_word(ids[0, : t0 + 1].tolist()) == word
            hits.append(ok)
        return {"nll": nll, "units": len(enc.ids), "hits": {"decode": hits}}


def train_bpe(docs: list[str], target: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(docs, trainers.BpeTrainer(vocab_size=target, show_progress=False, special_tokens=[EOT],
                                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return tok


def train_arm(arm, pieces: list[tuple[str, bool]], settings: Settings, seed: int, progress: bool) -> dict[str, Any]:
    """Train ``arm.model`` on the shared chunk order of ``seed``; returns losses and times."""
    from hf_ext.utils.progress import progress_bar

    order = np.random.default_rng(seed).permutation(len(pieces))
    model = arm.model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=settings.lr, betas=(0.9, 0.95), weight_decay=0.0)

    def schedule(step: int) -> float:
        if step < settings.warmup:
            return (step + 1) / settings.warmup
        frac = (step - settings.warmup) / max(1, settings.steps - settings.warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    losses, units, wall, cpu = [], 0, 0.0, 0.0
    for step in progress_bar(range(settings.steps), desc=arm.name, enabled=progress):
        idx = [order[(step * settings.batch_size + i) % len(order)] for i in range(settings.batch_size)]
        batch = arm.batch([pieces[i] for i in idx])  # tokenization is not timed: the model's compute is
        units += int(batch["attention_mask"].sum())
        w, c = time.perf_counter(), time.process_time()
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        wall, cpu = wall + time.perf_counter() - w, cpu + time.process_time() - c
        losses.append(float(loss.detach()))
    model.eval()
    return {"losses": losses, "wall_s": wall, "cpu_s": cpu, "units_per_step": units / settings.steps}


def _params(model, kind: str) -> dict[str, int]:
    emb = model.get_input_embeddings().weight.numel() + model.get_output_embeddings().weight.numel()
    total = sum(p.numel() for p in model.parameters())
    if kind == "tfree":  # the backbone's own 1-row token embedding is unused
        total -= model.model.get_input_embeddings().weight.numel()
    return {"embedding_head": emb, "backbone": total - emb}


def run(model: str = DEFAULT_MODEL, *, quick: bool = False, settings: Settings | None = None, progress: bool = True,
        **overrides: Any) -> Report:
    """Train T-FREE and BPE arms on the shipped Python documentation and compare them on held-out documents.

    Args:
        model: the corpus name (only ``"python-docs"``): this reproduction trains its own small models.
        quick: :data:`QUICK` instead of :data:`FULL`.
    """
    if model != DEFAULT_MODEL:
        raise ValueError(f"the tfree reproduction trains its own models on the corpus {DEFAULT_MODEL!r}; got "
                         f"--model {model!r}")
    settings = replace(settings or (QUICK if quick else FULL), **overrides)
    for name in ("bpe_targets", "seeds"):
        if isinstance(getattr(settings, name), list):
            settings = replace(settings, **{name: tuple(getattr(settings, name))})
    report = Report("tfree", model, quick, "T-FREE vs BPE at small scale: same backbone, text and steps")
    report.load.sample()
    docs = documents(settings.max_docs)
    train_docs, held_docs = split_documents(docs)
    eval_docs = held_docs[: settings.eval_docs] if settings.eval_docs else held_docs
    eval_texts = []
    for d in eval_docs:
        spans = [m.start() for m in re.finditer(r"\S+", d)]
        eval_texts.append(d[: spans[settings.eval_words]].rstrip() if len(spans) > settings.eval_words else d)
    pieces = chunks(train_docs, settings.chunk_words)
    bpes, seen = [], set()
    for target in settings.bpe_targets:
        tok = train_bpe(train_docs, target)
        if tok.get_vocab_size() not in seen:
            seen.add(tok.get_vocab_size())
            bpes.append((target, tok))
    n_bytes = sum(len(t.encode("utf-8")) for t in eval_texts)
    n_ws = sum(len(t.split()) for t in eval_texts)
    arms_res: dict[str, dict[str, Any]] = {}
    for seed in settings.seeds:
        arms = [TFreeArm(settings, seed, train_docs + eval_texts)] + [BPEArm(settings, seed, tok) for _, tok in bpes]
        for arm in arms:
            tr = train_arm(arm, pieces, settings, seed, progress)
            ev = [arm.evaluate(t) for t in eval_texts]
            res = arms_res.setdefault(arm.name, {"kind": arm.kind, "vocab": arm.vocab, "seeds": {},
                                                 "params": _params(arm.model, arm.kind)})
            hits = {k: [h for e in ev for h in e["hits"].get(k, [])] for k in ev[0]["hits"]}
            res["seeds"][seed] = {**{k: v for k, v in tr.items() if k != "losses"}, "final_loss": tr["losses"][-1],
                                  "losses": tr["losses"][:: max(1, settings.steps // 100)],
                                  "top1": {k: float(np.mean(v)) if v else None for k, v in hits.items()},
                                  "targets": {k: len(v) for k, v in hits.items()},
                                  "bits_per_byte": sum(e["nll"] for e in ev) / n_bytes / math.log(2),
                                  "fertility": sum(e["units"] for e in ev) / n_ws}
            if arm.kind == "tfree":
                res["dictionary_words"] = arm.model.dictionary_size
            report.load.sample()
    report.figures.update(settings=asdict(settings), corpus=SOURCE, python=sys.version.split()[0],
                          documents={"train": len(train_docs), "heldout": len(held_docs), "evaluated": len(eval_texts)},
                          train_chars=sum(map(len, train_docs)), train_words=sum(len(d.split()) for d in train_docs),
                          eval_bytes=n_bytes, eval_words=n_ws, bpe={f"target {t}": tok.get_vocab_size() for t, tok in bpes},
                          arms=arms_res)
    _fill_report(report, settings, arms_res, bpes, len(train_docs), sum(len(d.split()) for d in train_docs))
    report.plots.append(("tfree_vs_bpe.png", lambda path: _plot(arms_res, path)))
    return report


def _mean_sd(values: list[float]) -> tuple[float, float | None]:
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else None


def _fill_report(report: Report, settings: Settings, arms: dict[str, Any], bpes, n_train_docs: int, n_train_words: int):
    rows = []
    for name, res in arms.items():
        seeds = list(res["seeds"].values())
        top1, top1_sd = _mean_sd([s["top1"]["decode"] for s in seeds])
        lik = [s["top1"].get("likelihood") for s in seeds]
        bpb, bpb_sd = _mean_sd([s["bits_per_byte"] for s in seeds])
        rows.append([name, res["params"]["embedding_head"], len(seeds), top1, top1_sd,
                     statistics.mean(lik) if lik[0] is not None else None, bpb, bpb_sd, seeds[0]["fertility"],
                     statistics.mean(s["wall_s"] for s in seeds)])
    contended = " (contended)" if report.load.contended else ""
    report.tables.append(Table(
        "tfree.results", "Held-out next-word accuracy, bits per byte, parameters",
        ["arm", "embedding + head params", "seeds", "next-word top-1", "± sd", "T-FREE top-1, pattern likelihood",
         "bits per byte", "± sd", "units per word", f"train compute s{contended}"],
        rows, formats=["s", ",d", "d", ".1%", ".1%", ".1%", ".3f", ".3f", ".2f", ".0f"],
        notes="Next word = a letter run after a space. BPE: greedy decoding until the word ends; T-FREE: argmax of its "
              "decode scores over the closed dictionary of all training and held-out words (and, second column, of "
              "the pattern likelihood). Bits per byte: T-FREE's word probability is normalised over that closed "
              "dictionary (closed-vocabulary), BPE's is over its open vocabulary."))
    b = next(iter(arms.values()))["params"]["backbone"]
    reached = ", ".join(f"{t:,} → {tok.get_vocab_size():,}" for t, tok in bpes)
    report.summary.append(
        f"Backbone: Llama, {settings.num_layers} layers, hidden {settings.hidden_size}, {settings.num_heads} heads, MLP "
        f"{settings.intermediate_size} ({b:,} parameters besides embedding and head), trained from scratch for "
        f"{settings.steps} steps of {settings.batch_size} chunks of ≤ {settings.chunk_words} whitespace words (the same "
        f"chunks in the same order for every arm), AdamW lr {settings.lr}, seeds {list(settings.seeds)}. Text: "
        f"{SOURCE}; {n_train_docs:,} training documents ({n_train_words:,} whitespace words). BPE targets → sizes "
        f"reached on this text: {reached}.")


def _plot(arms: dict[str, Any], path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 3.4), dpi=100, layout="tight")
    ax = fig.subplots()
    for name, res in arms.items():
        for seed, s in res["seeds"].items():
            ax.plot(np.linspace(0, 1, len(s["losses"])), s["losses"], label=f"{name} (seed {seed})", lw=0.8)
    ax.set(xlabel="training progress", ylabel="training loss (T-FREE: sparse BCE; BPE: CE)", yscale="log")
    ax.legend(fontsize=7)
    fig.savefig(path)
