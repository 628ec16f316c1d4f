"""Markdown tables for reports (the tour's ``report.md``, MAD's ``report.md``): one helper instead of one per report.

No maintained table library is a dependency of hf_ext (``tabulate``, which ``pandas.DataFrame.to_markdown`` needs,
is not), so this is the single hand-written renderer: GitHub-flavoured pipe tables, cells escaped.

Example:
    >>> print(markdown_table(["task", "acc"], [["recall", 0.91234], ["a|b", 1]], align=["left", "right"]))
    | task | acc |
    |---|---:|
    | recall | 0.912 |
    | a\\|b | 1 |
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

__all__ = ["markdown_cell", "markdown_table"]

_ALIGN = {"left": "---", "right": "---:", "center": ":---:"}


def markdown_cell(value: Any, floatfmt: str = ".3f") -> str:
    """One cell's text: floats formatted with ``floatfmt``, ``|`` escaped, newlines folded to spaces."""
    text = format(value, floatfmt) if isinstance(value, float) else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_table(header: Sequence[Any], rows: Iterable[Sequence[Any]], *, align: Sequence[str] | None = None,
                   floatfmt: str = ".3f") -> str:
    """A GitHub-flavoured markdown table.

    Args:
        header: column names.
        rows: one sequence of cells per row (as many as ``header``).
        align: per column ``"left"`` (default), ``"right"`` or ``"center"``.
        floatfmt: format of float cells (other values are ``str()``-ed).

    Raises:
        ValueError: a row or ``align`` of another length than ``header``, or an unknown alignment.
    """
    align = list(align) if align is not None else ["left"] * len(header)
    if len(align) != len(header) or any(a not in _ALIGN for a in align):
        raise ValueError(f"align must give one of {sorted(_ALIGN)} per column ({len(header)}), got {align!r}")
    lines = ["| " + " | ".join(markdown_cell(h, floatfmt) for h in header) + " |",
             "|" + "|".join(_ALIGN[a] for a in align) + "|"]
    for i, row in enumerate(rows):
        cells = list(row)
        if len(cells) != len(header):
            raise ValueError(f"row {i} has {len(cells)} cells but the header has {len(header)}: {cells!r}")
        lines.append("| " + " | ".join(markdown_cell(c, floatfmt) for c in cells) + " |")
    return "\n".join(lines)
