"""Input handling shared by the ``fdtm`` and ``sdtm`` ``evaluate`` comparisons (hf_ext/metrics/…)."""

from __future__ import annotations

from .divergence import DivergenceResult, aligned_divergence, divergence_from_ids

IGNORE = -100
#: Reference URLs of the FDTM/SDTM comparisons (the DTM paper).
DTM_URLS = ("https://arxiv.org/abs/2311.01544",)


def _clean(rows) -> list[list[int]]:
    return [[int(t) for t in row if int(t) != IGNORE] for row in rows]


def divergence_from_inputs(predictions, references, *, aligned: bool = False, tokenizer=None) -> DivergenceResult:
    """FDT/SDT per sample from an ``evaluate`` comparison's inputs.

    Args:
        predictions: id lists (the candidate's teacher-forced argmax; ``-100`` padding is dropped), or, with
            ``aligned=True``, its free-running generation as ids or texts.
        references: the base model's continuation ids (or texts, aligned only), one per prediction.
        aligned: the who-what-benchmark alignment definition instead of teacher forcing.
        tokenizer: tokenizes texts (aligned only).

    Raises:
        ValueError: different numbers of predictions and references, or texts without ``aligned=True``.
    """
    if len(predictions) != len(references):
        raise ValueError(f"got {len(predictions)} predictions but {len(references)} references; pass one per reference")
    texts = bool(predictions) and isinstance(predictions[0], str)
    if texts and not aligned:
        raise ValueError("texts are only accepted with aligned=True; teacher-forced DTMs take token ids")
    if aligned:
        return aligned_divergence(references if texts else _clean(references),
                                  predictions if texts else _clean(predictions), tokenizer=tokenizer)
    return divergence_from_ids(_clean(predictions), _clean(references))


def comparison_features():
    """The two accepted input schemas: id sequences, or strings (aligned variant)."""
    import datasets

    return [
        datasets.Features({"predictions": datasets.Sequence(datasets.Value("int64")),
                           "references": datasets.Sequence(datasets.Value("int64"))}),
        datasets.Features({"predictions": datasets.Value("string"), "references": datasets.Value("string")}),
    ]


def divergence_comparison_class():
    """The base class of the ``fdtm`` / ``sdtm`` ``evaluate`` comparisons (built on first use: evaluate is optional).

    A subclass sets ``DESCRIPTION``, ``CITATION``, ``INPUTS`` and implements ``select(result, aggregate) -> dict``,
    the outputs it reports of the :class:`~hf_ext.dtm.divergence.DivergenceResult` and its ``aggregate()``.
    """
    global _COMPARISON
    if _COMPARISON is None:
        import evaluate

        from hf_ext.metrics import module_info

        class DivergenceComparison(evaluate.Comparison):
            DESCRIPTION = CITATION = INPUTS = ""

            def _info(self):
                return module_info(evaluate.ComparisonInfo, description=self.DESCRIPTION, citation=self.CITATION,
                                   inputs=self.INPUTS, features=comparison_features(), urls=DTM_URLS,
                                   module_type="comparison")

            def _compute(self, predictions, references, aligned=False, tokenizer=None):
                res = divergence_from_inputs(predictions, references, aligned=aligned, tokenizer=tokenizer)
                return self.select(res, res.aggregate())

            def select(self, result: DivergenceResult, aggregate: dict) -> dict:
                raise NotImplementedError

        _COMPARISON = DivergenceComparison
    return _COMPARISON


_COMPARISON = None
