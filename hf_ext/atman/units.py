"""Explanation units: which key positions are suppressed together (tokens, words, sentences, paragraphs, tiles).

A *unit* is one suppressible item of the prompt: a token, a word, a sentence, a paragraph, a chunk between custom
delimiters, or an image tile. Units are found from the tokenizer's character offsets (text) or from the positions of
the image placeholder tokens (VLM).

Example:
    >>> [u.label for u in text_units("hi you. ok", [(0, 0), (0, 1), (1, 2), (2, 3), (3, 4)], "word")][:1]
    ['hi']
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from hf_ext.utils.validation import check_size

GRANULARITIES = ("token", "word", "sentence", "paragraph")


@dataclass
class Unit:
    """One suppressible item.

    Attributes:
        label: display text (the token, word, sentence …, or ``"tile(r,c)"``).
        positions: key positions (indices into the *unpadded* prompt ⊕ target sequence) suppressed together.
        char_span: ``(start, end)`` in the prompt string, or ``None`` (special tokens, image tiles).
        tile: ``(row, col)`` of an image tile, else ``None``.
    """

    label: str
    positions: list[int]
    char_span: tuple[int, int] | None = None
    tile: tuple[int, int] | None = field(default=None)


def char_spans(text: str, granularity: str) -> list[tuple[int, int]]:
    """Half-open character spans of ``text`` at a granularity.

    Args:
        text: the prompt.
        granularity: ``"word"`` (maximal runs of non-space), ``"sentence"`` (up to and including ``.!?`` runs),
            ``"paragraph"`` (separated by blank lines) or any other string, used as a custom delimiter
            (the delimiter itself is kept at the end of the chunk it closes).

    Example:
        >>> char_spans("a b. c", "sentence")
        [(0, 4), (5, 6)]
    """
    if not isinstance(granularity, str) or not granularity:
        raise ValueError(f"granularity must be one of {GRANULARITIES} or a non-empty delimiter string, got {granularity!r}")
    if granularity == "word":
        pattern = r"\S+"
    elif granularity == "sentence":
        pattern = r"[^.!?\s][^.!?]*(?:[.!?]+|$)"
    elif granularity == "paragraph":
        spans = []
        for m in re.finditer(r"(?:(?!\n\s*\n).)+", text, flags=re.S):
            s, e = m.span()
            stripped = m.group().strip()
            if stripped:
                s += len(m.group()) - len(m.group().lstrip())
                spans.append((s, s + len(stripped)))
        return spans
    else:
        spans, start = [], 0
        while start < len(text):
            hit = text.find(granularity, start)
            end = len(text) if hit < 0 else hit + len(granularity)
            chunk = text[start:end]
            if chunk.strip():
                lead = len(chunk) - len(chunk.lstrip())
                spans.append((start + lead, start + len(chunk.rstrip())))
            start = end
        return spans
    return [(m.start(), m.start() + len(m.group().rstrip())) for m in re.finditer(pattern, text) if m.group().strip()]


def text_units(text: str, offsets: Sequence[tuple[int, int]] | Sequence[Sequence[int]], granularity: str = "token", *, tokens: list[str] | None = None) -> list[Unit]:
    """Units of a prompt from its tokenizer offsets.

    Args:
        text: the prompt string.
        offsets: ``[(start, end)]`` per prompt token (from ``return_offsets_mapping=True``); special tokens have
            empty offsets.
        granularity: ``"token"`` (every prompt token, special tokens included), ``"word"``, ``"sentence"``,
            ``"paragraph"`` or a custom delimiter string (see :func:`char_spans`).
        tokens: token strings for the labels at token granularity.

    Returns:
        Units in prompt order; a token that overlaps a span belongs to it (tokens are never split).
    """
    offsets = [tuple(int(x) for x in o) for o in offsets]
    if granularity == "token":
        return [Unit(label=(tokens[i] if tokens else text[s:e]), positions=[i], char_span=(s, e) if e > s else None)
                for i, (s, e) in enumerate(offsets)]
    units = []
    for s, e in char_spans(text, granularity):
        pos = [i for i, (ts, te) in enumerate(offsets) if te > ts and te > s and ts < e]
        if pos:
            units.append(Unit(label=text[s:e], positions=pos, char_span=(s, e)))
    return units


def tile_units(image_positions: Sequence[int], grid: tuple[int, int], tile: int = 1) -> list[Unit]:
    """Units of image tiles: ``tile × tile`` blocks of a ``grid`` of patch tokens (row-major placeholders).

    Args:
        image_positions: the key positions of the image's placeholder tokens, ``rows * cols`` of them, row-major.
        grid: ``(rows, cols)`` of patches.
        tile: patches per tile side (1 = every patch is a unit).

    Example:
        >>> [u.positions for u in tile_units(range(10, 14), (2, 2), tile=2)]
        [[10, 11, 12, 13]]
    """
    positions = [int(p) for p in image_positions]
    rows, cols = grid
    if rows * cols != len(positions):
        raise ValueError(f"grid {grid} has {rows * cols} patches but the image has {len(positions)} placeholder tokens")
    check_size("tile", tile)
    units = []
    for r0 in range(0, rows, tile):
        for c0 in range(0, cols, tile):
            pos = [positions[r * cols + c] for r in range(r0, min(r0 + tile, rows)) for c in range(c0, min(c0 + tile, cols))]
            units.append(Unit(label=f"tile({r0 // tile},{c0 // tile})", positions=pos, tile=(r0 // tile, c0 // tile)))
    return units
