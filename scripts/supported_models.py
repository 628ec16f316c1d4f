"""Generate docs/supported_models.md (and the README summary) from the conformance suite's results.

    python scripts/supported_models.py            # run the full matrix (pytest tests/conformance --full), render
    python scripts/supported_models.py --render   # only render docs/supported_models.json to Markdown + README

The full run writes ``docs/supported_models.json`` (every type × feature of the installed transformers); commit it
with the Markdown: it is the baseline that CI's conformance tier compares against.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.conformance.table import (  # noqa: E402
    BASELINE,
    MARKDOWN,
    README,
    README_END,
    README_START,
    readme_section,
    render_markdown,
    summary,
)


def run_matrix(json_path: Path, workers: str) -> int:
    """Run every cell through pytest (the suite's own code) and write the results to ``json_path``."""
    cmd = [sys.executable, "-m", "pytest", "tests/conformance", "-m", "conformance", "--full", "-q", "-p", "no:cacheprovider",
           "--conformance-json", str(json_path), "-n", workers, "--dist", "loadgroup"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.call(cmd, cwd=ROOT, env=env)


def render(json_path: Path) -> dict:
    data = json.loads(json_path.read_text())
    MARKDOWN.write_text(render_markdown(data))
    text = README.read_text()
    section = readme_section(data)
    if README_START in text and README_END in text:
        head, rest = text.split(README_START, 1)
        text = head + section + rest.split(README_END, 1)[1]
    else:
        text = text.rstrip() + "\n\n## Supported models\n\n" + section + "\n"
    README.write_text(text)
    return summary(data)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--render", action="store_true", help="only render an existing results file")
    parser.add_argument("--json", type=Path, default=BASELINE, help="results file (default docs/supported_models.json)")
    parser.add_argument("-n", "--workers", default="2", help="pytest-xdist workers for the full run")
    args = parser.parse_args(argv)
    if not args.render:
        rc = run_matrix(args.json, args.workers)
        if rc not in (0, 1):  # 1: some regression test failed; the table is still written
            return rc
    counts = render(args.json)
    print(json.dumps(counts))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
