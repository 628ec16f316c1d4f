"""FDTM (first divergent token metric) as an ``evaluate`` comparison: a thin shim over ``hf_ext.dtm.divergence``.

Load with ``evaluate.load(hf_ext.metrics.metric_path("fdtm"))`` (or instantiate :class:`FDTM` directly).

Teacher-forced (default, the paper's definition): ``predictions`` are the candidate's teacher-forced argmax ids on the
base's continuation (``hf_ext.dtm.score(..., return_scores=True)[1].predicted_ids``, one id per reference position;
-100 padding is dropped) and ``references`` the base's continuation ids. ``aligned=True`` is the who-what-benchmark
variant on free-running generations (ids, or texts with ``tokenizer=``).

Example:
    >>> import evaluate
    >>> from hf_ext.metrics import metric_path
    >>> fdtm = evaluate.load(metric_path("fdtm"))  # doctest: +SKIP
    >>> fdtm.compute(predictions=[[5, 6, 9]], references=[[5, 6, 7]])["fdtm"]  # doctest: +SKIP
    2.0
"""

import evaluate

from hf_ext.dtm.metric_inputs import DTM_URLS, comparison_features, divergence_from_inputs
from hf_ext.metrics import module_info

_DESCRIPTION = """First divergent token (FDT): the number of leading reference tokens a candidate model reproduces
(0-based; N when none diverges), averaged over samples (FDTM), with median, quantiles and the share with FDT = N.
variant "dtm.teacher_forced" (default) or "dtm.aligned" (OpenVINO who-what-benchmark, aligned=True)."""

_CITATION = """@inproceedings{deiseroth2024dtm,
  title={Divergent Token Metrics: Measuring degradation to prune away {LLM} components -- and optimize quantization},
  author={Deiseroth, Bj{\\"o}rn and Meuer, Max and Gritsch, Nikolas and Eichenberg, Constantin and Schramowski, Patrick
          and A{\\ss}enmacher, Matthias and Kersting, Kristian},
  booktitle={NAACL}, year={2024}
}"""

_INPUTS = """
Args:
    predictions: list of id lists (teacher-forced argmax of the candidate; aligned: its free-running generation),
        or texts with aligned=True and tokenizer=.
    references: list of id lists (the base model's greedy continuation), or texts (aligned only).
    aligned: use the alignment-based who-what-benchmark definition (default False).
    tokenizer: tokenizes texts (aligned only).
Returns:
    fdtm, fdt_median, fdt_q10 … fdt_q90, fdt_full_share, fdt_norm, variant, fdt (per sample), num_tokens (per sample).
"""


class FDTM(evaluate.Comparison):
    """The FDTM comparison (see the module docstring)."""

    def _info(self):
        return module_info(evaluate.ComparisonInfo, description=_DESCRIPTION, citation=_CITATION, inputs=_INPUTS,
                           features=comparison_features(), urls=DTM_URLS, module_type="comparison")

    def _compute(self, predictions, references, aligned=False, tokenizer=None):
        res = divergence_from_inputs(predictions, references, aligned=aligned, tokenizer=tokenizer)
        agg = res.aggregate()
        out = {k: v for k, v in agg.items() if k.startswith("fdt") or k == "variant"}
        out.update(fdt=res.fdt.tolist(), num_tokens=res.num_tokens.tolist())
        return out
