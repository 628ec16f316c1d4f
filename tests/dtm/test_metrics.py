"""The evaluate modules fdtm/sdtm load with evaluate.load(path) and agree with plain loops / the model API."""

from __future__ import annotations

import pytest

from hf_ext.dtm import score
from hf_ext.metrics import metric_path
from hf_ext.testing import tiny_tokenizer

from .conftest import make_ref
from .test_divergence import naive_first_mismatch, noisy_copy


@pytest.fixture(scope="module")
def modules():
    import evaluate

    return evaluate.load(metric_path("fdtm")), evaluate.load(metric_path("sdtm"))


def test_load_and_compute_on_ids(modules):
    fdtm, sdtm = modules
    preds, refs = [[5, 6, 9, 8], [1, 2, 3], [4, 4, -100]], [[5, 6, 7, 8], [1, 2, 3], [7, 4]]
    out = fdtm.compute(predictions=preds, references=refs)
    expect = [naive_first_mismatch(p, r) for p, r in zip(preds, refs)]
    assert out["fdt"] == expect == [2, 3, 0] and out["fdtm"] == pytest.approx(sum(expect) / 3)
    assert out["variant"] == "dtm.teacher_forced" and out["fdt_full_share"] == pytest.approx(1 / 3)
    s = sdtm.compute(predictions=preds, references=refs)
    assert s["sdt"] == [1, 0, 1] and s["sdtm"] == pytest.approx(2 / 3)


def test_matches_model_api(modules, causal_lms):
    fdtm, sdtm = modules
    base = causal_lms["qwen2"]
    ref = make_ref(base, "qwen2")
    res, scores = score(noisy_copy(base, 1.0), ref, return_scores=True)
    out = fdtm.compute(predictions=scores.predicted_ids.tolist(), references=ref["continuation_ids"])
    assert out["fdt"] == res.fdt.tolist()
    assert sdtm.compute(predictions=scores.predicted_ids.tolist(), references=ref["continuation_ids"])["sdt"] == res.sdt.tolist()


def test_aligned_texts_and_errors(modules):
    fdtm, sdtm = modules
    tok = tiny_tokenizer()
    out = fdtm.compute(predictions=["hello wXorld"], references=["hello world"], aligned=True, tokenizer=tok)
    assert out["variant"] == "dtm.aligned" and out["fdt"] == [7]
    assert sdtm.compute(predictions=["hello wXorld"], references=["hello world"], aligned=True, tokenizer=tok)["sdt"] == [1]
    with pytest.raises(ValueError, match="aligned=True"):
        fdtm.compute(predictions=["a"], references=["a"])
    with pytest.raises(ValueError, match="metric 'nope'"):
        metric_path("nope")
