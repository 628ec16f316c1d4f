"""Render AtMan explanations: a self-contained HTML heat-map of the prompt and a matplotlib PNG.

Colours: with ``postprocessing="none"`` the heat-map shows ``−Δ`` (how much the target's loss rises when the unit is
suppressed) on a diverging scale, red = important, blue = suppressing it helps the target; with ``"absolute"`` or
``"square"`` a sequential red scale. Every unit also prints its value, and the sign is an underline pattern, so the
page reads without colour; a legend and a scale explain the colours.

Example:
    >>> from hf_ext.atman import AtManExplainer
    >>> from hf_ext.testing import tiny_causal_lm, tiny_tokenizer
    >>> exp = AtManExplainer(tiny_causal_lm(), tiny_tokenizer(), progress=False).explain("a cat", " sat", granularity="word")
    >>> html = to_html(exp)
    >>> html.startswith("<!DOCTYPE html>"), "<html lang='en'>" in html, "Legend" in html
    (True, True, True)
"""

from __future__ import annotations

import functools
from pathlib import Path


def _values(exp, postprocessing, target_token):
    s = exp.scores(postprocessing, target_token=target_token)
    return -s if postprocessing == "none" else s


_RED, _BLUE = (220, 30, 30), (30, 90, 220)


def _colour(v: float, vmax: float, diverging: bool) -> str:
    a = 0.0 if vmax <= 0 else min(1.0, abs(v) / vmax)
    r, g, b = _BLUE if diverging and v < 0 else _RED
    return f"rgba({r}, {g}, {b}, {a:.3f})"


def _shown(v: float) -> str:
    return f"{v:+.3g}" if v else "0"


@functools.lru_cache(maxsize=1)
def _template():
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("hf_ext.atman", "templates"), autoescape=True,
                             keep_trailing_newline=True)
    return env.get_template("explanation.html.j2")


def _unit(text: str, v: float, vmax: float, diverging: bool, *, chip: bool = False, after: str = "") -> dict:
    sign = "pos" if v > 0 else "neg" if v < 0 else "zero"
    return {"text": text, "shown": _shown(v), "colour": _colour(v, vmax, diverging),
            "css": f"u {sign} chip" if chip else f"u {sign}", "after": after}


def _view(exp, vals: list[float], diverging: bool) -> dict:
    """The pieces of one heat-map (prompt text, units with values, image grid) and its scale."""
    vmax = max((abs(v) for v in vals), default=0.0)
    grid, pieces = None, []
    if exp.image_grid is not None:
        rows, cols = exp.image_grid
        tiles = {u.tile: (v, u.label) for u, v in zip(exp.units, vals) if u.tile is not None}
        grid = [[{"shown": _shown(tiles.get((r, c), (0.0, ""))[0]), "label": tiles.get((r, c), (0.0, f"tile({r},{c})"))[1],
                  "colour": _colour(tiles.get((r, c), (0.0, ""))[0], vmax, diverging)}
                 for c in range(cols)] for r in range(rows)]
        pieces = [_unit(u.label, v, vmax, diverging, after=" ") for u, v in zip(exp.units, vals) if u.tile is None]
    elif exp.prompt is not None:
        spans = sorted(((u.char_span, v) for u, v in zip(exp.units, vals) if u.char_span), key=lambda x: x[0][0])
        pieces = [_unit(f"[{u.label}]", v, vmax, diverging, chip=True) for u, v in zip(exp.units, vals) if not u.char_span]
        cursor = 0
        for (s, e), v in spans:
            if s < cursor:
                continue
            pieces.append({"text": exp.prompt[cursor:s], "colour": None})
            pieces.append(_unit(exp.prompt[s:e], v, vmax, diverging))
            cursor = e
        pieces.append({"text": exp.prompt[cursor:], "colour": None})
    else:
        pieces = [_unit(u.label, v, vmax, diverging, after=" ") for u, v in zip(exp.units, vals)]
    white = "rgba(255, 255, 255, 1)"
    gradient = (f"{_colour(-1, 1, True)}, {white}, {_colour(1, 1, True)}" if diverging
                else f"{white}, {_colour(1, 1, False)}")
    return {"grid": grid, "pieces": pieces, "gradient": gradient, "high": _shown(vmax),
            "low": _shown(-vmax) if diverging else "0"}


def to_html(exp, *, postprocessing: str = "none", target_token: int | None = None, lang: str = "en",
            full_page: bool = True, open_tokens: bool = False) -> str:
    """HTML of an explanation: the prompt with each unit's background coloured by its score **and its value
    printed next to it**, a legend, a colour scale, and one view per target token.

    Text explanations colour the prompt's characters (units without a character span, e.g. BOS, are shown as
    bracketed chips); image explanations draw the tile grid as a table with the values in the cells. The sign is
    also drawn as an underline pattern (solid = positive, dashed = negative), so the page reads without colour.
    The first view is the complete target (or ``target_token``); with several target columns the per-token views
    follow in a ``<details>`` block, then a table of all values. Rendered from the Jinja2 template
    ``hf_ext/atman/templates/explanation.html.j2`` (autoescaped).

    Args:
        exp: the :class:`~hf_ext.atman.explanation.Explanation`.
        postprocessing: ``"none"`` (shows ``−Δ`` on a diverging scale), ``"absolute"`` or ``"square"``.
        target_token: the first view shows only this column (default: the sum over columns).
        lang: the page's language (the ``lang`` attribute, for screen readers and hyphenation).
        full_page: a complete ``<!DOCTYPE html>`` page; ``False``: a ``<div>`` fragment (notebooks).
        open_tokens: show the per-token views expanded.
    """
    if not isinstance(lang, str) or not lang.replace("-", "").isalnum():
        raise ValueError(f"lang={lang!r} must be a BCP 47 language tag such as 'en' or 'de-CH'")
    diverging = postprocessing == "none"
    title = repr(exp.target if exp.target is not None else "".join(exp.target_tokens[:len(exp.target_tokens) - exp.n_foil_tokens]))
    target = exp.target if exp.target is not None else " ".join(exp.target_tokens)
    first = _view(exp, _values(exp, postprocessing, target_token).tolist(), diverging)
    first.update(key="all" if target_token is None else f"token-{target_token}", target=target,
                 heading="Complete target" + (" (target minus foil)" if exp.contrastive else "")
                 if target_token is None else f"Target token {target_token}: {exp.target_tokens[target_token]!r}")
    views = [first]
    T = len(exp.target_tokens)
    if T > 1:
        for t, tok in enumerate(exp.target_tokens):
            foil = t >= T - exp.n_foil_tokens
            view = _view(exp, _values(exp, postprocessing, t).tolist(), diverging)
            view.update(key=f"token-{t}", target=tok,
                        heading=f"{'Foil' if foil else 'Target'} token {t}: {tok!r}" + (" (Δ negated)" if foil else ""))
            views.append(view)
    matrix = None
    if T > 1:
        d = -exp.delta if diverging else {"absolute": exp.delta.abs(), "square": exp.delta.square()}[postprocessing]
        matrix = {"columns": exp.target_tokens,
                  "rows": [{"label": u.label, "cells": [_shown(v) for v in row]} for u, row in zip(exp.units, d.tolist())]}
    step = "log-probability" if exp.step == "cross_entropy" else "probability"
    quantity = f"the {step} of the target" + (" relative to the foil" if exp.contrastive else "")
    what = (f"−Δ {step} (how much suppressing the unit lowers {quantity})" if diverging
            else f"{postprocessing}(Δ {step})")
    return _template().render(
        full_page=full_page, lang=lang, title=title, mode=exp.mode, suppression_factor=exp.suppression_factor,
        step=exp.step, foil=None if exp.foil is None else repr(exp.foil), what=what, quantity=quantity,
        diverging=diverging, views=views, matrix=matrix, open_tokens=open_tokens)


def plot(exp, path=None, *, postprocessing: str = "none", target_token: int | None = None):
    """A matplotlib ``Figure``: bars per unit (text) or the tile heat-map (image); written as PNG to ``path``."""
    from hf_ext.utils.imports import require

    require("matplotlib")
    from matplotlib.figure import Figure

    vals = _values(exp, postprocessing, target_token)
    if exp.image_grid is not None:
        import torch

        rows, cols = exp.image_grid
        grid = torch.zeros(rows, cols)
        for u, v in zip(exp.units, vals.tolist()):
            if u.tile is not None:
                grid[u.tile] = v
        fig = Figure(figsize=(4, 4), dpi=100, layout="tight")
        ax = fig.add_subplot()
        im = ax.imshow(grid.numpy(), cmap="Reds")
        fig.colorbar(im, ax=ax)
    else:
        fig = Figure(figsize=(max(5.0, 0.4 * len(exp.units)), 3), dpi=100, layout="tight")
        ax = fig.add_subplot()
        ax.bar(range(len(vals)), vals.tolist(), color=["tab:red" if v >= 0 else "tab:blue" for v in vals.tolist()])
        ax.set_xticks(range(len(vals)), [u.label if u.label.strip() else "␣" for u in exp.units], rotation=90, fontsize=8)
        ax.set_ylabel("−Δ CE" if postprocessing == "none" else f"{postprocessing}(Δ)")
    ax.set_title(f"AtMan: target {exp.target!r}" if exp.target is not None else "AtMan", fontsize=9)
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path)
    return fig
