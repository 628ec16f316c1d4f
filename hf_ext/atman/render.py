"""Render AtMan explanations: a self-contained HTML heat-map of the prompt and a matplotlib PNG.

Colours: with ``postprocessing="none"`` the heat-map shows ``−Δ`` (how much the target's loss rises when the unit is
suppressed) on a diverging scale, red = important, blue = suppressing it helps the target; with ``"absolute"`` or
``"square"`` a sequential red scale.

Example:
    >>> from hf_ext.atman import AtManExplainer
    >>> from hf_ext.testing import tiny_causal_lm, tiny_tokenizer
    >>> exp = AtManExplainer(tiny_causal_lm(), tiny_tokenizer(), progress=False).explain("a cat", " sat", granularity="word")
    >>> to_html(exp).startswith("<!DOCTYPE html>")
    True
"""

from __future__ import annotations

import functools
from pathlib import Path


def _values(exp, postprocessing, target_token):
    s = exp.scores(postprocessing, target_token=target_token)
    return -s if postprocessing == "none" else s


def _colour(v: float, vmax: float, diverging: bool) -> str:
    a = 0.0 if vmax <= 0 else min(1.0, abs(v) / vmax)
    if diverging and v < 0:
        return f"rgba(30, 90, 220, {a:.3f})"
    return f"rgba(220, 30, 30, {a:.3f})"


@functools.lru_cache(maxsize=1)
def _template():
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("hf_ext.atman", "templates"), autoescape=True,
                             keep_trailing_newline=True)
    return env.get_template("explanation.html.j2")


def _unit(text: str, v: float, vmax: float, diverging: bool, *, chip: bool = False, after: str = "") -> dict:
    return {"text": text, "value": v, "colour": _colour(v, vmax, diverging), "css": "u chip" if chip else "u",
            "after": after}


def to_html(exp, *, postprocessing: str = "none", target_token: int | None = None) -> str:
    """HTML page: the prompt with each unit's background coloured by its score; hover shows the value.

    Text explanations colour the prompt's characters (units without a character span, e.g. BOS, are shown as
    bracketed chips); image explanations draw the tile grid as a table. Rendered from the Jinja2 template
    ``hf_ext/atman/templates/explanation.html.j2`` (autoescaped).
    """
    vals = _values(exp, postprocessing, target_token).tolist()
    vmax = max((abs(v) for v in vals), default=0.0)
    diverging = postprocessing == "none"
    grid, pieces = None, []
    if exp.image_grid is not None:
        rows, cols = exp.image_grid
        tiles = {u.tile: v for u, v in zip(exp.units, vals) if u.tile is not None}
        grid = [[{"value": tiles.get((r, c), 0), "colour": _colour(tiles.get((r, c), 0.0), vmax, diverging)}
                 for c in range(cols)] for r in range(rows)]
        pieces = [_unit(u.label, v, vmax, diverging, after=" ") for u, v in zip(exp.units, vals) if u.tile is None]
    elif exp.prompt is not None:
        spans = sorted(((u.char_span, v, u.label) for u, v in zip(exp.units, vals) if u.char_span), key=lambda x: x[0][0])
        pieces = [_unit(f"[{u.label}]", v, vmax, diverging, chip=True) for u, v in zip(exp.units, vals) if not u.char_span]
        cursor = 0
        for (s, e), v, _ in spans:
            if s < cursor:
                continue
            pieces.append({"text": exp.prompt[cursor:s], "colour": None})
            pieces.append(_unit(exp.prompt[s:e], v, vmax, diverging))
            cursor = e
        pieces.append({"text": exp.prompt[cursor:], "colour": None})
    else:
        pieces = [_unit(u.label, v, vmax, diverging, after=" ") for u, v in zip(exp.units, vals)]
    return _template().render(
        title=repr(exp.target if exp.target is not None else "".join(exp.target_tokens)), mode=exp.mode,
        suppression_factor=exp.suppression_factor, vmax=vmax, grid=grid, pieces=pieces,
        what="−Δ cross-entropy (loss rise when suppressed)" if diverging else f"{postprocessing}(Δ)",
        target=exp.target if exp.target is not None else " ".join(exp.target_tokens))


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
