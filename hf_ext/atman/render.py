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

import html
from pathlib import Path


def _values(exp, postprocessing, target_token):
    s = exp.scores(postprocessing, target_token=target_token)
    return -s if postprocessing == "none" else s


def _colour(v: float, vmax: float, diverging: bool) -> str:
    a = 0.0 if vmax <= 0 else min(1.0, abs(v) / vmax)
    if diverging and v < 0:
        return f"rgba(30, 90, 220, {a:.3f})"
    return f"rgba(220, 30, 30, {a:.3f})"


def to_html(exp, *, postprocessing: str = "none", target_token: int | None = None) -> str:
    """HTML page: the prompt with each unit's background coloured by its score; hover shows the value.

    Text explanations colour the prompt's characters (units without a character span, e.g. BOS, are shown as
    bracketed chips); image explanations draw the tile grid as a table.
    """
    vals = _values(exp, postprocessing, target_token).tolist()
    vmax = max((abs(v) for v in vals), default=0.0)
    diverging = postprocessing == "none"
    what = "−Δ cross-entropy (loss rise when suppressed)" if diverging else f"{postprocessing}(Δ)"
    title = f"AtMan explanation of target {html.escape(repr(exp.target if exp.target is not None else ''.join(exp.target_tokens)))}"
    body = []
    if exp.image_grid is not None:
        rows, cols = exp.image_grid
        tiles = {u.tile: v for u, v in zip(exp.units, vals) if u.tile is not None}
        body.append("<table style='border-collapse:collapse'>")
        for r in range(rows):
            cells = "".join(f"<td title='{tiles.get((r, c), 0):.4g}' style='width:28px;height:28px;border:1px solid #ccc;"
                            f"background:{_colour(tiles.get((r, c), 0.0), vmax, diverging)}'></td>" for c in range(cols))
            body.append(f"<tr>{cells}</tr>")
        body.append("</table>")
        rest = [(u, v) for u, v in zip(exp.units, vals) if u.tile is None]
        body.extend(f"<span class='u' title='{v:.4g}' style='background:{_colour(v, vmax, diverging)}'>{html.escape(u.label)}</span> "
                    for u, v in rest)
    elif exp.prompt is not None:
        spans = sorted(((u.char_span, v, u.label) for u, v in zip(exp.units, vals) if u.char_span), key=lambda x: x[0][0])
        chips = [(u.label, v) for u, v in zip(exp.units, vals) if not u.char_span]
        body.extend(f"<span class='u chip' title='{v:.4g}' style='background:{_colour(v, vmax, diverging)}'>"
                    f"[{html.escape(label)}]</span>" for label, v in chips)
        cursor = 0
        for (s, e), v, _ in spans:
            if s < cursor:
                continue
            body.append(html.escape(exp.prompt[cursor:s]))
            body.append(f"<span class='u' title='{v:.4g}' style='background:{_colour(v, vmax, diverging)}'>"
                        f"{html.escape(exp.prompt[s:e])}</span>")
            cursor = e
        body.append(html.escape(exp.prompt[cursor:]))
    else:
        body.extend(f"<span class='u' title='{v:.4g}' style='background:{_colour(v, vmax, diverging)}'>{html.escape(u.label)}</span> "
                    for u, v in zip(exp.units, vals))
    target = html.escape(exp.target if exp.target is not None else " ".join(exp.target_tokens))
    return (
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>AtMan</title><style>"
        "body{font-family:sans-serif;max-width:60em;margin:2em auto}.p{font-family:monospace;white-space:pre-wrap;"
        "line-height:1.8}.u{border-radius:3px}.t{font-family:monospace;border-bottom:2px solid #333}</style></head><body>"
        f"<h3>{title}</h3><p>mode {html.escape(exp.mode)}, suppression factor {exp.suppression_factor}, "
        f"colour = {html.escape(what)} (max |value| {vmax:.3g})</p>"
        f"<div class='p'>{''.join(body)}<span class='t'>{target}</span></div></body></html>\n"
    )


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
