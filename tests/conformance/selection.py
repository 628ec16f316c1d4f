"""Which (type, feature) cells a run checks: all with ``--full``; else core + DTM for every type and the other
features on a seeded rotating sample of at least :data:`SAMPLE_SIZE` types."""

from __future__ import annotations

import datetime
import os
import random

from .catalog import CORE_FEATURES, FEATURES, denominator

SAMPLE_SIZE = 20


def sample_seed() -> int:
    """``HF_EXT_CONFORMANCE_SEED`` if set, else ``year * 100 + ISO week`` (the sample rotates weekly)."""
    env = os.environ.get("HF_EXT_CONFORMANCE_SEED")
    if env:
        return int(env)
    year, week, _ = datetime.date.today().isocalendar()
    return year * 100 + week


def sampled_types(seed: int | None = None) -> list[str]:
    types = denominator()
    rng = random.Random(sample_seed() if seed is None else seed)
    return sorted(rng.sample(types, min(SAMPLE_SIZE, len(types))))


def cells(full: bool) -> list[tuple[str, str]]:
    types = denominator()
    if full:
        return [(t, f) for t in types for f in FEATURES]
    sample = set(sampled_types())
    return [(t, f) for t in types for f in FEATURES if f in CORE_FEATURES or t in sample]
