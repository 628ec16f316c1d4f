"""MAD accuracy (macro = mad-lab/torchmetrics parity, or micro) as an ``evaluate`` metric (a shim over hf_ext.mad).

Example:
    >>> import evaluate
    >>> from hf_ext.metrics import metric_path
    >>> metric = evaluate.load(metric_path("mad_accuracy"))
    >>> metric.compute(predictions=[[0, 0, 0]], references=[[0, 1, -100]], average="micro")
    {'accuracy': 0.5}
"""

import datasets
import evaluate

from hf_ext.metrics import module_info

_DESCRIPTION = """Accuracy of the MAD synthetic tasks (Poli et al., ICML 2024) over the scored target positions
(references != -100). average="macro" (default) reproduces mad-lab's reported metric, torchmetrics
MulticlassAccuracy's macro rule: per-class recall averaged over classes with tp+fp+fn > 0. average="micro" is the plain
fraction of scored positions predicted right."""

_CITATION = """@inproceedings{poli2024mechanistic,
  title={Mechanistic Design and Scaling of Hybrid Architectures},
  author={Poli, Michael and Thomas, Armin W and Nguyen, Eric and others},
  booktitle={ICML}, year={2024}}"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of list of int): predicted token ids (argmax), one list per sequence.
    references (list of list of int): MAD targets (-100 = not scored), same shapes.
    average (str): "macro" (default, mad-lab parity) or "micro".
    num_classes (int, optional): vocab size, for bounds checking.
Returns:
    accuracy (float).
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class MadAccuracy(evaluate.Metric):
    def _info(self):
        ids = datasets.List(datasets.Value("int64"))
        return module_info(evaluate.MetricInfo, description=_DESCRIPTION, citation=_CITATION, inputs=_KWARGS_DESCRIPTION,
                           features=datasets.Features({"predictions": ids, "references": ids}),
                           urls=["https://arxiv.org/abs/2403.17844", "https://github.com/athms/mad-lab"])

    def _compute(self, predictions, references, average="macro", num_classes=None):
        import numpy as np

        from hf_ext.mad.metrics import mad_accuracy

        p = np.concatenate([np.asarray(x, dtype=np.int64).reshape(-1) for x in predictions]) if len(predictions) else np.zeros(0, np.int64)
        r = np.concatenate([np.asarray(x, dtype=np.int64).reshape(-1) for x in references]) if len(references) else np.zeros(0, np.int64)
        return {"accuracy": mad_accuracy(p, r, average=average, num_classes=num_classes)}
