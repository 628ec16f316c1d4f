"""Explain a JSONL file of items: ``explanations.jsonl`` (one :meth:`Explanation.to_dict` per line), one HTML page per
item and an ``index.html`` linking them (what ``hf-ext atman explain --dataset`` writes).

An item is one JSON object per line: ``{"prompt": str, "target": str}`` and optionally ``"foil"`` (contrast target),
``"granularity"`` (overrides the default) and ``"id"`` (default: the line number). Blank lines are skipped.

Example:
    >>> import json, os, tempfile
    >>> from hf_ext.atman import AtManExplainer
    >>> from hf_ext.testing import tiny_causal_lm, tiny_tokenizer
    >>> d = tempfile.mkdtemp()
    >>> with open(os.path.join(d, "items.jsonl"), "w") as f:
    ...     _ = f.write(json.dumps({"prompt": "a cat", "target": " sat"}) + "\\n")
    >>> ex = AtManExplainer(tiny_causal_lm(), tiny_tokenizer(), progress=False)
    >>> explain_dataset(ex, os.path.join(d, "items.jsonl"), os.path.join(d, "out"), progress=False)["items"]
    1
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from hf_ext.utils.progress import progress_bar

from .explanation import Explanation

if TYPE_CHECKING:
    from .explainer import AtManExplainer

__all__ = ["explain_dataset", "read_items"]

_KEYS = {"prompt", "target", "foil", "granularity", "id"}


def read_items(path: str | os.PathLike) -> list[dict]:
    """The items of a JSONL file, validated.

    Args:
        path: a JSONL file, one ``{"prompt": ..., "target": ...}`` object per line (optional ``"foil"``,
            ``"granularity"``, ``"id"``; see the module docstring).

    Returns:
        One dict per non-blank line, in file order, each with an ``"id"`` (default: its line number).

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: a line that is not a JSON object with string ``prompt`` and ``target`` (the message names the
            line number and shows the bad value), unknown keys, or repeated ids.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"dataset={str(path)!r} is not a file; give a JSONL file with one "
                                '{"prompt": ..., "target": ...} object per line')
    items, seen = [], set()
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}:{n} is not JSON ({err}): {line[:80]!r}") from err
        if not isinstance(item, dict):
            raise ValueError(f"{path}:{n} must be a JSON object with prompt and target, got {item!r}")
        unknown = set(item) - _KEYS
        if unknown:
            raise ValueError(f"{path}:{n} has unknown keys {sorted(unknown)}; accepted: {sorted(_KEYS)}")
        for key in ("prompt", "target"):
            if not isinstance(item.get(key), str) or not item[key]:
                raise ValueError(f"{path}:{n}: {key} must be a non-empty string, got {item.get(key)!r}")
        for key in ("foil", "granularity"):
            if item.get(key) is not None and not isinstance(item[key], str):
                raise ValueError(f"{path}:{n}: {key} must be a string, got {item[key]!r}")
        item.setdefault("id", n)
        if item["id"] in seen:
            raise ValueError(f"{path}:{n}: id {item['id']!r} is repeated; ids must be unique")
        seen.add(item["id"])
        items.append(item)
    if not items:
        raise ValueError(f"dataset={str(path)!r} holds no items")
    return items


@functools.lru_cache(maxsize=1)
def _index_template():
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("hf_ext.atman", "templates"), autoescape=True)
    return env.get_template("index.html.j2")


def explain_dataset(explainer: AtManExplainer, dataset: str | os.PathLike, out: str | os.PathLike, *, granularity: str = "token", step: str = "cross_entropy",
                    postprocessing: str = "none", lang: str = "en", progress: bool = True) -> dict:
    """Explain every item of ``dataset`` and write ``out/explanations.jsonl``, ``out/html/<n>.html``, ``out/index.html``.

    Args:
        explainer: an :class:`~hf_ext.atman.AtManExplainer` (with a tokenizer).
        dataset: the JSONL file (see the module docstring).
        out: the output folder (created).
        granularity: unit size of items without their own ``"granularity"``.
        step: ``"cross_entropy"`` or ``"probability"``.
        postprocessing: how the pages and the index show the scores (``"none"``, ``"absolute"``, ``"square"``).
        lang: the pages' ``lang`` attribute.
        progress: a bar over the items.

    Returns:
        ``{"items": n, "jsonl": path, "index": path}`` (paths as strings).
    """
    items = read_items(dataset)
    out = Path(out)
    (out / "html").mkdir(parents=True, exist_ok=True)
    rows = []
    with open(out / "explanations.jsonl", "w", encoding="utf-8") as jsonl:
        for k, item in enumerate(progress_bar(items, desc="AtMan items", unit="item", enabled=progress)):
            exp = explainer.explain(item["prompt"], item["target"], granularity=item.get("granularity") or granularity,
                                    step=step, foil=item.get("foil"))
            jsonl.write(json.dumps({"id": item["id"], **exp.to_dict()}, ensure_ascii=False) + "\n")
            page = Path("html") / f"{k:05d}.html"
            (out / page).write_text(exp.to_html(postprocessing, lang=lang), encoding="utf-8")
            rows.append(_index_row(item, exp, page.as_posix(), postprocessing))
    index = out / "index.html"
    index.write_text(_index_template().render(rows=rows, lang=lang, dataset=str(dataset), step=step), encoding="utf-8")
    return {"items": len(items), "jsonl": str(out / "explanations.jsonl"), "index": str(index)}


def _index_row(item: dict, exp: Explanation, page: str, postprocessing: str) -> dict:
    scores = exp.scores(postprocessing)
    values = -scores if postprocessing == "none" else scores
    top = int(values.argmax()) if values.numel() else 0
    return {"id": item["id"], "prompt": item["prompt"], "target": item["target"], "foil": item.get("foil") or "",
            "top": exp.units[top].label if exp.units else "", "value": f"{float(values[top]):+.3g}" if exp.units else "",
            "page": page}
