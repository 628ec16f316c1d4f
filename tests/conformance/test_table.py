"""The regression rule of the conformance tier and the table's summary (plain unit tests: no model is built)."""

from __future__ import annotations

from .table import regression, summary


def _committed(status: str) -> dict:
    return {"types": {"llama": {"excluded": None, "cells": {"scar": {"status": status, "detail": ""}}}}}


def test_a_passing_cell_may_not_become_anything_else():
    assert regression(_committed("pass"), "llama", "scar", "pass") is None
    for now in ("fail", "unsupported", "n/a"):
        why = regression(_committed("pass"), "llama", "scar", now)
        assert why is not None and "llama × scar" in why and repr(now) in why


def test_a_refusal_may_become_a_pass_never_a_failure():
    assert regression(_committed("unsupported"), "llama", "scar", "pass") is None
    assert regression(_committed("unsupported"), "llama", "scar", "unsupported") is None
    assert regression(_committed("unsupported"), "llama", "scar", "fail") is not None


def test_known_failures_and_new_types_are_not_regressions():
    assert regression(_committed("fail"), "llama", "scar", "fail") is None
    assert regression(_committed("pass"), "brand_new_type", "scar", "fail") is None  # unknown: newer transformers
    assert regression({}, "llama", "scar", "fail") is None


def test_summary_counts_types_passing_every_applicable_feature():
    cells = {"a": {"status": "pass"}, "b": {"status": "n/a"}}
    data = {"features": ["a", "b"], "types": {
        "t1": {"excluded": None, "cells": cells},
        "t2": {"excluded": None, "cells": {"a": {"status": "pass"}, "b": {"status": "unsupported"}}},
        "t3": {"excluded": None, "cells": {"a": {"status": "n/a"}, "b": {"status": "n/a"}}},  # nothing applies
        "t4": {"excluded": "encoder-decoder", "cells": {}},
    }}
    s = summary(data)
    assert (s["all_pass"], s["denominator"], s["excluded"]) == (1, 3, 1)


def test_passes_checked_on_a_wrapped_language_model_are_listed_with_their_note():
    from .table import render_markdown

    note = "checked on the wrapped causal LM `language_model` (OPTForCausalLM)"
    data = {"transformers": "x", "generated": "today", "features": ["a", "b"], "types": {
        "vlm": {"class": "V", "excluded": None, "cells": {"a": {"status": "pass", "detail": note},
                                                          "b": {"status": "fail", "detail": "boom"}}},
        "lm": {"class": "L", "excluded": None, "cells": {"a": {"status": "pass", "detail": ""},
                                                         "b": {"status": "pass", "detail": ""}}},
    }}
    md = render_markdown(data)
    assert f"- `vlm`: {note}" in md.split("## Passes with a note")[1]
    assert "`lm`:" not in md.split("## Passes with a note")[1]
    assert "- `vlm` × b: fail — boom" in md


def test_types_built_with_a_stand_in_vision_tower_are_counted_and_named():
    from .catalog import VISION_STAND_INS, stand_in_note
    from .table import STAND_IN_MARK, readme_section, render_markdown

    note = stand_in_note(next(iter(VISION_STAND_INS)))
    if note is not None:  # (None where timm imports: the type's own tower is built)
        assert STAND_IN_MARK in note
    note = note or f"{STAND_IN_MARK} for the timm tower"
    data = {"transformers": "x", "generated": "today", "features": ["a"], "types": {
        "vlm": {"class": "V", "excluded": None, "cells": {"a": {"status": "pass", "detail": note}}},
        "lm": {"class": "L", "excluded": None, "cells": {"a": {"status": "pass", "detail": ""}}},
    }}
    s = summary(data)
    assert (s["all_pass"], s["stand_in"]) == (2, ["vlm"])
    for text in (render_markdown(data), readme_section(data)):
        assert "1 of them (`vlm`) built with a stand-in vision tower" in text and "1 without them" in text
