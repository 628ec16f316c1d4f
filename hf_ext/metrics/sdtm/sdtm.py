"""SDTM (share/sum of divergent tokens metric) as an ``evaluate`` comparison: a thin shim over ``hf_ext.dtm``.

Same inputs as the ``fdtm`` module. Teacher-forced (default): SDT = number of positions where the candidate's
teacher-forced argmax differs from the base's continuation. ``aligned=True``: who-what-benchmark's "tokens to correct
in the prediction" after a difflib alignment of free-running generations.

Example:
    >>> import evaluate
    >>> from hf_ext.metrics import metric_path
    >>> sdtm = evaluate.load(metric_path("sdtm"))
    >>> sdtm.compute(predictions=[[5, 8, 9]], references=[[5, 6, 7]])["sdtm"]
    2.0
"""


from hf_ext.dtm.metric_inputs import divergence_comparison_class

_DESCRIPTION = """Sum of divergent tokens (SDT): how many tokens a candidate model gets wrong (teacher-forced) or would
have to correct (aligned, who-what-benchmark), averaged over samples (SDTM), with its share of N."""

_CITATION = """@inproceedings{deiseroth2024dtm,
  title={Divergent Token Metrics: Measuring degradation to prune away {LLM} components -- and optimize quantization},
  author={Deiseroth, Bj{\\"o}rn and others}, booktitle={NAACL}, year={2024}
}"""

_INPUTS = """
Args:
    predictions: list of id lists (teacher-forced argmax; aligned: free-running generation) or texts (aligned only).
    references: list of id lists (base continuation) or texts (aligned only).
    aligned: who-what-benchmark definition (default False).
    tokenizer: tokenizes texts (aligned only).
Returns:
    sdtm, sdt_median, sdt_share (mean SDT/N; aligned: SDT/len(prediction)), variant, sdt (per sample).
"""


class SDTM(divergence_comparison_class()):
    """The SDTM comparison (see the module docstring)."""

    DESCRIPTION, CITATION, INPUTS = _DESCRIPTION, _CITATION, _INPUTS

    def select(self, result, aggregate):
        return {"sdtm": aggregate["sdtm"], "sdt_median": aggregate["sdt_median"], "sdt_share": aggregate["sdt_share"],
                "variant": aggregate["variant"], "sdt": result.sdt.tolist()}
