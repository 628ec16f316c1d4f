"""FDTM (first divergent token metric) as an ``evaluate`` comparison: a thin shim over ``hf_ext.dtm.divergence``.

Load with ``evaluate.load(hf_ext.metrics.metric_path("fdtm"))`` (or instantiate :class:`FDTM` directly).

Teacher-forced (default, the paper's definition): ``predictions`` are the candidate's teacher-forced argmax ids on the
base's continuation (``hf_ext.dtm.score(..., return_scores=True)[1].predicted_ids``, one id per reference position;
-100 padding is dropped) and ``references`` the base's continuation ids. ``aligned=True`` is the who-what-benchmark
variant on free-running generations (ids, or texts with ``tokenizer=``).

Example:
    >>> import evaluate
    >>> from hf_ext.metrics import metric_path
    >>> fdtm = evaluate.load(metric_path("fdtm"))
    >>> fdtm.compute(predictions=[[5, 6, 9]], references=[[5, 6, 7]])["fdtm"]
    2.0
"""


from hf_ext.dtm.metric_inputs import divergence_comparison_class

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


class FDTM(divergence_comparison_class()):
    """The FDTM comparison (see the module docstring)."""

    DESCRIPTION, CITATION, INPUTS = _DESCRIPTION, _CITATION, _INPUTS

    def select(self, result, aggregate):
        out = {k: v for k, v in aggregate.items() if k.startswith("fdt") or k == "variant"}
        out.update(fdt=result.fdt.tolist(), num_tokens=result.num_tokens.tolist())
        return out
