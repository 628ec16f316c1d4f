"""What a SCAR latent responds to: its top-activating contexts over a set of texts (as SAE dashboards show them).

For each chosen latent, the ``top_k`` tokens of the texts where the latent's activation is largest (only positive
activations count: a latent that does not fire in a text has no context there), each with a window of the
surrounding tokens and the latent's activation on every token of the window.

Example:
    >>> from hf_ext.scar import ScarAdapter
    >>> from hf_ext.testing import tiny_causal_lm, tiny_tokenizer
    >>> model = tiny_causal_lm("gpt2")
    >>> scar = ScarAdapter.for_model(model, layer=0, concepts=["toxicity"]).attach(model)
    >>> report = latent_report(scar, ["you are awful", "have a nice day"], tiny_tokenizer(), latents=[0, 5], top_k=3)
    >>> report.labels, len(report.contexts[0]) <= 3
    (['toxicity', 'latent 5'], True)
    >>> "<html" in report.to_html()
    True
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from ..core.inputs import prepare_batch, tokenize_left_padded

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from hf_ext.scar import ScarAdapter  # via the package: modeling_scar imports this module

__all__ = ["ACTIVATIONS", "LatentContext", "LatentReport", "latent_report"]

#: ``"latents"``: ``h = ReLU(TopK(z))`` (what the decoder reads); ``"pre_activations"``: ``z`` before TopK (for
#: conditioned latents the concept logit, whether or not it survives TopK).
ACTIVATIONS = ("latents", "pre_activations")


@dataclass
class LatentContext:
    """One top-activating token of a latent.

    Attributes:
        value: the latent's activation on the token.
        text_index: which text (index into the texts given).
        position: the token's index in that text's tokens (no padding).
        tokens: the window's token strings (the token itself at ``center``).
        activations: the latent's activation on each window token.
        center: index of the token in ``tokens``.
    """

    value: float
    text_index: int
    position: int
    tokens: list[str]
    activations: list[float]
    center: int


@dataclass
class LatentReport:
    """Top-activating contexts per latent (:func:`latent_report`).

    Attributes:
        latents: the latent indices.
        labels: a name per latent (the concept for conditioned latents, else ``"latent i"``).
        contexts: per latent, its contexts by decreasing value (at most ``top_k``).
        activation: ``"latents"`` or ``"pre_activations"``.
        num_texts: how many texts were read.
        num_tokens: how many tokens were read.
    """

    latents: list[int]
    labels: list[str]
    contexts: list[list[LatentContext]]
    activation: str = "latents"
    num_texts: int = 0
    num_tokens: int = 0
    metadata: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """JSON-serialisable dict; :meth:`from_dict` restores it."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> LatentReport:
        """The report of a :meth:`to_dict` dict (as read back from JSON).

        Raises:
            ValueError: ``data`` is not such a dict (it lacks ``latents``, ``labels`` or ``contexts``).
        """
        if not isinstance(data, dict) or not {"latents", "labels", "contexts"} <= set(data):
            raise ValueError(f"data must be a LatentReport.to_dict() dict with latents, labels and contexts, got "
                             f"{type(data).__name__} with keys {sorted(data) if isinstance(data, dict) else None}")
        return cls(**{**data, "contexts": [[LatentContext(**c) for c in cs] for cs in data["contexts"]]})

    def save(self, path: str | os.PathLike) -> Path:
        """Write the report: ``.html`` → :meth:`to_html`, anything else → JSON (:meth:`load` reads it back)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        text = self.to_html() if path.suffix.lower() in (".html", ".htm") else json.dumps(self.to_dict(), ensure_ascii=False)
        path.write_text(text, encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> LatentReport:
        """Read a report saved as JSON by :meth:`save`.

        Raises:
            FileNotFoundError: no file at ``path``.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"path={str(path)!r} is not a file; give the JSON written by LatentReport.save()")
        return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))

    def to_html(self, *, lang: str = "en", full_page: bool = True) -> str:
        """An HTML page: per latent, its contexts with each token shaded by the latent's activation (relative to
        the latent's largest value) and the activating token's value printed."""
        rows = []
        for latent, label, contexts in zip(self.latents, self.labels, self.contexts):
            top = max((c.value for c in contexts), default=0.0)
            shown = []
            for c in contexts:
                toks = [{"text": t, "alpha": f"{max(0.0, min(1.0, a / top)) if top > 0 else 0.0:.3f}",
                         "value": f"{a:.3g}", "center": i == c.center} for i, (t, a) in enumerate(zip(c.tokens, c.activations))]
                shown.append({"value": f"{c.value:.4g}", "text_index": c.text_index, "position": c.position, "tokens": toks})
            rows.append({"latent": latent, "label": label, "contexts": shown})
        return _template().render(rows=rows, lang=lang, full_page=full_page, activation=self.activation,
                                  num_texts=self.num_texts, num_tokens=self.num_tokens)

    def _repr_html_(self) -> str:
        return self.to_html(full_page=False)


@functools.lru_cache(maxsize=1)
def _template():
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("hf_ext.scar", "templates"), autoescape=True)
    return env.get_template("latent_report.html.j2")


def _choose_latents(adapter, latents) -> list[int]:
    n = adapter.config.n_latents
    if latents is None:
        return list(range(adapter.config.num_concepts))
    if latents == "all":
        return list(range(n))
    if isinstance(latents, int) and not isinstance(latents, bool):
        latents = [latents]
    out = []
    for lat in latents:
        if isinstance(lat, str):
            out.append(adapter.config.concept_index(lat))
        elif isinstance(lat, bool) or not isinstance(lat, int) or not 0 <= lat < n:
            raise ValueError(f"latents must be None, 'all', or latent indices in [0, {n}) / concept names, got {lat!r}")
        else:
            out.append(lat)
    if not out:
        raise ValueError("latents is empty; give None (the conditioned latents), 'all' or some indices")
    return out


@torch.no_grad()
def latent_report(adapter: ScarAdapter, texts: Sequence[str], tokenizer: PreTrainedTokenizerBase, *, model: nn.Module | None = None,
                  latents: Sequence[int | str] | int | str | None = None, top_k: int = 10, window: int = 8,
                  activation: str = "latents", batch_size: int = 16, max_length: int | None = None,
                  progress: bool = False) -> LatentReport:
    """The ``top_k`` top-activating tokens of each latent over ``texts``, with their contexts.

    Args:
        adapter: an attached :class:`~hf_ext.scar.modeling_scar.ScarAdapter` (any site).
        texts: the texts to read.
        tokenizer: the base model's tokenizer.
        model: the base model (default: the one the adapter is attached to).
        latents: latent indices or concept names; ``None`` = the conditioned latents ``0..C-1``; ``"all"`` = every
            latent.
        top_k: contexts per latent (fewer where the latent fires on fewer tokens).
        window: tokens shown on each side of the activating token.
        activation: ``"latents"`` (``h``, post TopK) or ``"pre_activations"`` (``z``); see :data:`ACTIVATIONS`.
        batch_size, max_length: texts per forward; truncation in tokens.
        progress: a tqdm bar over batches.

    Returns:
        A :class:`LatentReport`.

    Raises:
        ValueError: bad ``latents``, ``top_k``, ``window`` or ``activation``; TypeError: ``texts`` not strings.
    """
    from hf_ext.utils.progress import progress_bar

    model = adapter.require_attached(model)
    if isinstance(texts, str) or not texts or not all(isinstance(t, str) for t in texts):
        raise TypeError(f"texts must be a non-empty list of strings, got {type(texts).__name__}")
    for name, value, low in (("top_k", top_k, 1), ("window", window, 0), ("batch_size", batch_size, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name}={value!r} must be an int >= {low}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation={activation!r} is not one of {ACTIVATIONS}")
    chosen = _choose_latents(adapter, latents)
    cols = torch.tensor(chosen)
    K, W = len(chosen), 2 * window + 1
    best_v = torch.full((K, top_k), -torch.inf)
    best_id = torch.zeros(K, top_k, 2, dtype=torch.long)  # (text, position)
    best_win = torch.full((K, top_k, W), torch.nan)
    all_ids, n_tokens = [], 0
    for start in progress_bar(range(0, len(texts), batch_size), desc="latent report", enabled=progress):
        ids, mask = tokenize_left_padded(tokenizer, texts[start:start + batch_size], max_length)
        pads = (mask == 0).sum(1)
        all_ids += [row[p:].tolist() for row, p in zip(ids, pads.tolist())]
        n_tokens += int(mask.sum())
        x = adapter.run_capture(model, prepare_batch(model, ids, mask), activations=True)
        h, z = adapter.encode(x.reshape(-1, x.shape[-1]))[:2]
        a = (h if activation == "latents" else z)[:, cols.to(h.device)].float().cpu().view(*ids.shape, K)
        real = mask.bool()[..., None]
        score = a.masked_fill(~real, -torch.inf)
        B, T = ids.shape
        kk = min(top_k, B * T)
        # stable: among equal values the earlier text and position come first (as the merge below keeps them)
        flat = score.reshape(B * T, K).argsort(dim=0, descending=True, stable=True)[:kk]  # [kk, K]
        v = score.reshape(B * T, K).gather(0, flat)
        b, t = flat // T, flat % T
        # window activations around each candidate (NaN outside the text)
        padded = torch.nn.functional.pad(a.masked_fill(~real, torch.nan).permute(0, 2, 1), (window, window),
                                         value=torch.nan)  # [B, K, T + 2w]
        wins = padded.unfold(2, W, 1)  # [B, K, T, W]
        kidx = torch.arange(K).expand(kk, K)
        cand_win = wins[b, kidx, t]  # [kk, K, W]
        cand_id = torch.stack([b + start, t - pads[b]], -1)  # [kk, K, 2]
        merged_v = torch.cat([best_v, v.T], 1)
        order = merged_v.argsort(dim=1, descending=True, stable=True)[:, :top_k]
        best_v = merged_v.gather(1, order)
        best_id = torch.cat([best_id, cand_id.permute(1, 0, 2)], 1).gather(1, order[..., None].expand(-1, -1, 2))
        best_win = torch.cat([best_win, cand_win.permute(1, 0, 2)], 1).gather(1, order[..., None].expand(-1, -1, W))
    labels = [adapter.config.concepts[i] if i < adapter.config.num_concepts else f"latent {i}" for i in chosen]
    contexts = []
    for k in range(K):
        row = []
        for j in range(top_k):
            value = float(best_v[k, j])
            if not value > 0:
                break
            text, pos = best_id[k, j].tolist()
            ids = all_ids[text]
            lo, hi = max(0, pos - window), min(len(ids), pos + window + 1)
            acts = best_win[k, j, lo - (pos - window):hi - (pos - window)].tolist()
            row.append(LatentContext(value=value, text_index=text, position=pos, center=pos - lo, activations=acts,
                                     tokens=[tokenizer.decode([i]) for i in ids[lo:hi]]))
        contexts.append(row)
    return LatentReport(latents=chosen, labels=labels, contexts=contexts, activation=activation,
                        num_texts=len(texts), num_tokens=n_tokens,
                        metadata={"site": adapter.config.site, "layer": adapter.config.layer, "top_k": top_k,
                                  "window": window})
