"""AtMan relevance maps and deletion-AUC faithfulness as an ``evaluate`` metric (a thin shim over hf_ext.atman).

In the style of evaluate's ``perplexity``: the model is passed to ``compute``.

Example:
    >>> import evaluate
    >>> from hf_ext.metrics import metric_path
    >>> from hf_ext.testing import tiny_causal_lm, tiny_tokenizer
    >>> metric = evaluate.load(metric_path("atman"))
    >>> res = metric.compute(prompts=["a cat"], targets=[" sat"], model=tiny_causal_lm(), tokenizer=tiny_tokenizer())
    >>> sorted(res)
    ['atman_auc', 'faithfulness', 'mean_atman_auc', 'mean_faithfulness', 'mean_random_auc', 'random_auc', 'relevance', 'units']
"""

import datasets
import evaluate

from hf_ext.metrics import module_info

_DESCRIPTION = """AtMan (Deiseroth et al., NeurIPS 2023) explains a causal LM's target by suppressing each prompt unit
inside attention and measuring the change of the target's cross-entropy. This metric returns, per (prompt, target)
pair, the relevance map (−Δ CE per unit, positive = important) and the deletion AUC: the area under the target's
relative probability when units are suppressed most-relevant first (lower = more faithful), the same for random
orders, and faithfulness = random AUC − AtMan AUC (> 0 beats random)."""

_CITATION = """@inproceedings{deiseroth2023atman,
  title={AtMan: Understanding Transformer Predictions Through Memory Efficient Attention Manipulation},
  author={Deiseroth, Bj{\\"o}rn and Deb, Mayukh and Weinbach, Samuel and Brack, Manuel and Schramowski, Patrick and Kersting, Kristian},
  booktitle={NeurIPS}, year={2023}}"""

_KWARGS_DESCRIPTION = """
Args:
    prompts (list of str): the prompts.
    targets (list of str): the continuation to explain for each prompt.
    model: a transformers causal LM (sdpa or eager attention).
    tokenizer: its fast tokenizer.
    granularity (str): "token" (default), "word", "sentence", "paragraph" or a delimiter string.
    mode (str): "log_additive" (default), "multiplicative" or "reference_compat".
    suppression_factor (float): weight of a suppressed unit when explaining (default 0.1).
    deletion_factor (float): weight of a deleted unit on the deletion curve (default 0.0: removal).
    n_random (int): random orders for the baseline (default 8). seed (int): their seed (default 0).
    max_batch_size (int): perturbations per forward (default 8).
Returns:
    relevance (list of list of float), units (list of list of str), atman_auc, random_auc, faithfulness (lists of
    float), and their means mean_atman_auc, mean_random_auc, mean_faithfulness.
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Atman(evaluate.Metric):
    def _info(self):
        features = datasets.Features({"prompts": datasets.Value("string"), "targets": datasets.Value("string")})
        return module_info(evaluate.MetricInfo, description=_DESCRIPTION, citation=_CITATION, inputs=_KWARGS_DESCRIPTION,
                           features=features, urls=["https://arxiv.org/abs/2301.08110", "https://github.com/Aleph-Alpha/AtMan"])

    def _compute(self, prompts, targets, model=None, tokenizer=None, granularity="token", mode="log_additive",
                 suppression_factor=0.1, deletion_factor=0.0, n_random=8, seed=0, max_batch_size=8, progress=False):
        from hf_ext.atman import AtManExplainer, deletion_auc

        if model is None or tokenizer is None:
            raise ValueError("atman.compute needs model= and tokenizer= (the model is passed to compute, as in perplexity)")
        explainer = AtManExplainer(model, tokenizer, mode=mode, suppression_factor=suppression_factor,
                                   max_batch_size=max_batch_size, progress=progress)
        out = {"relevance": [], "units": [], "atman_auc": [], "random_auc": [], "faithfulness": []}
        for prompt, target in zip(prompts, targets):
            exp = explainer.explain(prompt, target, granularity=granularity)
            res = deletion_auc(explainer, prompt, target, granularity=granularity, n_random=n_random, seed=seed,
                               factor=deletion_factor, explanation=exp)
            out["relevance"].append(exp.importance().tolist())
            out["units"].append([u.label for u in exp.units])
            for key in ("atman_auc", "random_auc", "faithfulness"):
                out[key].append(res[key])
        for key in ("atman_auc", "random_auc", "faithfulness"):
            out[f"mean_{key}"] = sum(out[key]) / max(len(out[key]), 1)
        return out
