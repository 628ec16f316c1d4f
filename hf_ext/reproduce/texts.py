"""Real English text that ships with a dependency: the prose of the Python Language Reference.

CPython ships the reference's topic pages as ``pydoc_data.topics`` (the text ``help("if")`` prints), about 465k
characters of technical English written by people, under the Python Software Foundation License 2.0. hf_ext
requires Python, so the text is always there; nothing is copied into hf_ext. :func:`paragraphs` keeps the prose
(no grammar productions or code examples: indented lines are dropped) and splits it by topic into a calibration and
a held-out part, so that a plan chosen on one is judged on the other. The topics of the two parts are disjoint, and
since the reference repeats some paragraphs under several topics (``def`` and ``function``, for one: about a tenth
of the calibration paragraphs), each paragraph is kept once, in the first place it occurs, and the held-out part
drops every paragraph the calibration part holds: no held-out paragraph was seen in calibration.

Example:
    >>> calib, held = paragraphs("calibration"), paragraphs("heldout")
    >>> len(calib) > 50 and len(held) > 50
    True
    >>> set(calib) & set(held)  # no paragraph in both parts
    set()
    >>> len(calib) == len(set(calib)) and len(held) == len(set(held))  # nor twice in one
    True
"""

from __future__ import annotations

import hashlib
import re

SOURCE = "pydoc_data.topics (the Python Language Reference's topic pages, shipped with CPython; PSF License 2.0)"
SPLITS = ("calibration", "heldout")


def paragraphs(split: str, min_chars: int = 200) -> list[str]:
    """Prose paragraphs of one split, in a fixed order.

    Args:
        split: ``"calibration"`` or ``"heldout"`` (topics are assigned by a hash of their name).
        min_chars: drop shorter paragraphs.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    calibration = _split_paragraphs(False, min_chars)
    if split == "calibration":
        return calibration
    seen = set(calibration)
    return [p for p in _split_paragraphs(True, min_chars) if p not in seen]


def _split_paragraphs(heldout: bool, min_chars: int) -> list[str]:
    """The prose paragraphs of one part's topics, each once (in the order of first occurrence)."""
    from pydoc_data.topics import topics

    out: dict[str, None] = {}
    for name in sorted(topics):
        held = int(hashlib.sha256(name.encode()).hexdigest(), 16) % 2 == 1
        if held != heldout:
            continue
        for block in re.split(r"\n\s*\n", topics[name]):
            lines = block.split("\n")
            if any(line.startswith((" ", "\t")) for line in lines) or re.fullmatch(r"[*=\-]+", lines[-1].strip()):
                continue  # code, grammar, or a heading with its underline
            text = " ".join(line.strip() for line in lines).strip()
            if len(text) >= min_chars:
                out.setdefault(text, None)
    return list(out)
