"""The docstring examples under hf_ext/ run (issue 16): how many ``>>>`` lines run, how many are skipped, and why.

The examples themselves run under ``pytest --doctest-modules hf_ext`` (``make doctest``, the docs tier). This file
counts them the way doctest sees them (one example per ``>>>`` line; ``...`` continuations belong to it) and checks
the floor: at least :data:`MIN_RUN` examples run, at most :data:`MAX_SKIPPED_SHARE` of them carry ``+SKIP``, and
every skip says why in a comment on the same line (a Hub download or a GPU; ``# doctest: +SKIP`` alone is not a
reason). ``python tests/test_doctest_coverage.py`` prints the counts per module.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil
import re
import sys
from dataclasses import dataclass, field

import pytest

pytestmark = pytest.mark.docs

MIN_RUN = 500
MAX_SKIPPED_SHARE = 0.05
#: doctest reads its directive at the end of a line, so a skip's reason is a comment before it on that line:
#: ``>>> model = real_model("smollm2-135m-instruct")  # downloads a GGUF file from PyPI  # doctest: +SKIP``.
_DIRECTIVE = re.compile(r"#\s*doctest:[^\n]*$", re.M)
_COMMENT = re.compile(r"#\s*\w[^#]{3,}")


@dataclass
class Count:
    run: int = 0
    skipped: int = 0
    unexplained: list[str] = field(default_factory=list)


def _modules() -> list[str]:
    import hf_ext

    names = ["hf_ext"]
    for info in pkgutil.walk_packages(hf_ext.__path__, prefix="hf_ext."):
        names.append(info.name)
    return sorted(names)


def count_examples() -> dict[str, Count]:
    """Module name -> its examples that run / are skipped, the same modules pytest's doctest collector imports."""
    finder = doctest.DocTestFinder(exclude_empty=True)
    counts: dict[str, Count] = {}
    for name in _modules():
        module = importlib.import_module(name)
        count = Count()
        for test in finder.find(module, name):
            for example in test.examples:
                if example.options.get(doctest.SKIP):
                    count.skipped += 1
                    if not _COMMENT.search(_DIRECTIVE.sub("", example.source)):
                        count.unexplained.append(f"{test.name}: {example.source.splitlines()[0].strip()}")
                else:
                    count.run += 1
        if count.run or count.skipped:
            counts[name] = count
    return counts


def test_enough_docstring_examples_run_and_few_are_skipped():
    counts = count_examples()
    run = sum(c.run for c in counts.values())
    skipped = sum(c.skipped for c in counts.values())
    assert run >= MIN_RUN, f"only {run} docstring example lines run (floor {MIN_RUN})"
    assert skipped <= MAX_SKIPPED_SHARE * (run + skipped), (
        f"{skipped} of {run + skipped} docstring example lines are skipped (at most {MAX_SKIPPED_SHARE:.0%}): "
        + ", ".join(f"{m} {c.skipped}" for m, c in counts.items() if c.skipped))


def test_every_skipped_example_says_why():
    unexplained = [line for c in count_examples().values() for line in c.unexplained]
    assert not unexplained, "skipped without a reason comment (why: Hub download? GPU?):\n  " + "\n  ".join(unexplained)


if __name__ == "__main__":
    counts = count_examples()
    for name, c in counts.items():
        print(f"{name:<55} run {c.run:>4}  skipped {c.skipped:>3}")
    run, skipped = sum(c.run for c in counts.values()), sum(c.skipped for c in counts.values())
    print(f"{'total':<55} run {run:>4}  skipped {skipped:>3}  ({skipped / max(run + skipped, 1):.1%} skipped)")
    sys.exit(0)
