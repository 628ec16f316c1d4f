"""A griffe extension for the API site: hf_ext's docstrings title their doctest section ``Example:``, which griffe's
Google parser does not know (it knows ``Examples:``); renamed here, the ``>>>`` lines render as code instead of as
Markdown (where ``x[0][:3]`` would read as a link). Loaded by ``mkdocs.yml``."""

from __future__ import annotations

import re
from typing import Any

import griffe

_EXAMPLE = re.compile(r"(?m)^(\s*)Example:[ \t]*$")


class ExampleSections(griffe.Extension):
    """Rename each docstring's ``Example:`` section to ``Examples:`` before griffe parses it."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _EXAMPLE.sub(r"\1Examples:", obj.docstring.value)
