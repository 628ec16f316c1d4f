"""mad_accuracy against torchmetrics' MulticlassAccuracy (mad-lab's metric) and plain masked accuracy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchmetrics.classification import MulticlassAccuracy

from hf_ext.mad import mad_accuracy
from hf_ext.mad.metrics import mad_accuracy_from_logits


def _naive_macro(preds, refs):
    """Per-class recall tp / (tp + fn), averaged over the classes that are a target or predicted at a scored position
    (a class predicted but never a target counts 0): a plain loop, independent of torchmetrics."""
    p, r = np.asarray(preds).reshape(-1), np.asarray(refs).reshape(-1)
    keep = r != -100
    p, r = p[keep], r[keep]
    recalls = []
    for c in sorted(set(p.tolist()) | set(r.tolist())):
        support = int((r == c).sum())
        recalls.append(int(((p == c) & (r == c)).sum()) / support if support else 0.0)
    return sum(recalls) / len(recalls)


def _tm(preds, refs, V):
    return MulticlassAccuracy(num_classes=V, ignore_index=-100)(torch.as_tensor(preds).reshape(-1),
                                                               torch.as_tensor(refs).reshape(-1)).item()


def test_hand_made_macro_cases_match_torchmetrics():
    # class 3 is predicted but never a target -> counts as 0; class 5 never occurs -> excluded
    refs = np.array([[0, 0, 1, 1, -100, 2], [2, 2, -100, -100, 1, 0]])
    preds = np.array([[0, 3, 1, 0, 4, 2], [2, 3, 5, 5, 1, 0]])
    ours = mad_accuracy(preds, refs, num_classes=8)
    # by hand: recall c0 = 2/3, c1 = 2/3, c2 = 2/3, c3 = 0 (predicted, never a target); 4 and 5 are predicted only at
    # ignored positions -> excluded
    assert ours == pytest.approx((2 / 3 + 2 / 3 + 2 / 3 + 0.0) / 4)
    assert ours == pytest.approx(_tm(preds, refs, 8), abs=1e-6)


@pytest.mark.parametrize("seed", range(6))
def test_random_cases_match_torchmetrics_and_micro_is_plain_accuracy(seed):
    rng = np.random.default_rng(seed)
    V = int(rng.integers(3, 20))
    refs = rng.integers(-1, V, size=(4, 30))
    refs[refs < 0] = -100
    preds = np.where(rng.random((4, 30)) < 0.5, np.maximum(refs, 0), rng.integers(0, V, size=(4, 30)))
    assert mad_accuracy(preds, refs, num_classes=V) == pytest.approx(_naive_macro(preds, refs), abs=1e-12)
    assert mad_accuracy(preds, refs, num_classes=V) == pytest.approx(_tm(preds, refs, V), abs=1e-6)  # mad-lab's call
    keep = refs != -100
    assert mad_accuracy(preds, refs, average="micro") == pytest.approx((preds[keep] == refs[keep]).mean())
    logits = np.eye(V)[preds]
    assert mad_accuracy_from_logits(torch.tensor(logits), torch.tensor(refs)) == pytest.approx(_tm(preds, refs, V), abs=1e-6)


def test_evaluate_module():
    import evaluate

    from hf_ext.metrics import metric_path

    metric = evaluate.load(metric_path("mad_accuracy"))
    refs = [[0, 1, -100], [1, 1, 2]]
    preds = [[0, 0, 2], [1, 1, 0]]
    res = metric.compute(predictions=preds, references=refs)
    assert res["accuracy"] == pytest.approx(_tm(preds, refs, 3), abs=1e-6)
    assert metric.compute(predictions=preds, references=refs, average="micro")["accuracy"] == pytest.approx(3 / 5)


def test_bad_input():
    with pytest.raises(ValueError, match="average"):
        mad_accuracy([1], [1], average="weighted")
    with pytest.raises(ValueError, match="match in size"):
        mad_accuracy([1, 2], [1])
    with pytest.raises(ValueError, match="num_classes=2"):
        mad_accuracy([5], [1], num_classes=2)
    assert mad_accuracy([1], [-100]) == 0.0
