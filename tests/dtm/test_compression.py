"""Compression contexts, the sensitivity scan (with/without depth-prefix caching), plans, int8 backend, masks."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from hf_ext.core.scoring import weights_fingerprint
from hf_ext.dtm import (
    CompressionPlan,
    Int8WeightOnlyLinear,
    PruningMaskCallback,
    apply_plan,
    build_plan,
    compressed,
    coverage_curve,
    curve_auc,
    fake_quant,
    list_components,
    load_compressed,
    magnitude_prune,
    magnitude_prune_weight,
    save_compressed,
    score,
    sensitivity_scan,
    weight_perturbation,
)
from hf_ext.dtm.int8 import quantize_absmax
from hf_ext.testing import tiny_causal_lm

from .conftest import N, make_ref

THREE = ("llama", "gpt2", "gpt_neox")


def test_list_components_counts(causal_lms):
    # Llama/Qwen2: q k v o gate up down; GPT-2: c_attn c_proj c_fc c_proj; NeoX: qkv dense h_to_4h 4h_to_h; OPT: 6
    expected = {"llama": 14, "qwen2": 14, "gpt2": 8, "gpt_neox": 8, "opt": 12}
    for family, model in causal_lms.items():
        assert len(list_components(model)) == expected[family], family
    assert list_components(causal_lms["llama"], layers=[1])[0] == "model.layers.1.self_attn.q_proj"


def test_contexts_restore_bit_exactly_even_on_error(causal_lm):
    names = list_components(causal_lm)
    before = weights_fingerprint(causal_lm, exact=True)
    with fake_quant(causal_lm, names):
        assert weights_fingerprint(causal_lm, exact=True) != before
    with magnitude_prune(causal_lm, names, 0.7):
        pass
    with compressed(causal_lm, int8=names[:2], sparsity={names[2]: 0.5}):
        pass
    with pytest.raises(RuntimeError, match="boom"), fake_quant(causal_lm, names[0]):
        raise RuntimeError("boom")
    assert weights_fingerprint(causal_lm, exact=True) == before


def test_fake_quant_matches_numpy_reference(causal_lm):
    name = list_components(causal_lm)[0]
    module = causal_lm.get_submodule(name)
    w = module.weight.detach().numpy().copy()
    w = w if isinstance(module, torch.nn.Linear) else w.T  # [out, in]
    scale = np.abs(w).max(axis=1, keepdims=True) / 127.0
    expect = np.clip(np.round(w / scale), -127, 127) * scale
    with fake_quant(causal_lm, name):
        got = module.weight.detach().numpy().copy()
        got = got if isinstance(module, torch.nn.Linear) else got.T
    np.testing.assert_allclose(got, expect, rtol=0, atol=1e-7)


def test_magnitude_prune_matches_numpy_reference():
    w = torch.randn(16, 8, generator=torch.Generator().manual_seed(0))
    for s in (0.0, 0.25, 0.9, 1.0):
        out = magnitude_prune_weight(w, s).numpy()
        k = int(round(s * w.numel()))
        thresh = np.sort(np.abs(w.numpy()).ravel())[k - 1] if k else -1
        assert (out == 0).sum() == k
        np.testing.assert_array_equal(out, np.where(np.abs(w.numpy()) <= thresh, 0, w.numpy()))
    with pytest.raises(ValueError, match="sparsity must be a finite number in \\[0.0, 1.0\\], got 1.5"):
        magnitude_prune_weight(w, 1.5)


def test_sparsity_zero_and_dead_component_give_full_fdt(causal_lm, family):
    ref = make_ref(causal_lm, family)
    names = list_components(causal_lm)
    with magnitude_prune(causal_lm, names, 0.0):
        assert score(causal_lm, ref).fdt.tolist() == [N] * len(ref)
    dead = copy.deepcopy(causal_lm)
    with torch.no_grad():
        dead.get_submodule(names[0]).weight.zero_()
    dref = make_ref(dead, f"dead-{family}")
    with fake_quant(dead, names[0]), magnitude_prune(dead, names[0], 0.9):
        assert score(dead, dref).fdt.tolist() == [N] * len(dref)


@pytest.mark.parametrize("family", THREE)
def test_scan_prefix_cache_equals_full_forward(causal_lms, family):
    model = causal_lms[family]
    ref = make_ref(model, family)
    before = weights_fingerprint(model)
    methods = {"int8": [4], "prune": [0.5, 0.95]}
    cached = sensitivity_scan(model, ref, methods=methods, progress=False)
    full = sensitivity_scan(model, ref, methods=methods, prefix_cache=False, progress=False)
    assert len(cached.rows) == len(list_components(model)) * 3
    for a, b in zip(cached.rows, full.rows):
        assert (a["component"], a["method"], a["level"]) == (b["component"], b["method"], b["level"])
        assert a["fdtm"] == b["fdtm"] and a["sdtm"] == b["sdtm"]
        assert a["nll"] == pytest.approx(b["nll"], rel=1e-5)
    # independent check of one row: score() on the perturbed model (core teacher forcing)
    row = full.select("prune", 0.95)[0]
    with magnitude_prune(model, row["component"], 0.95):
        assert score(model, ref).aggregate()["fdtm"] == row["fdtm"]
    assert weights_fingerprint(model) == before
    ranking = cached.ranking("prune", 0.95)
    fdtms = {r["component"]: r["fdtm"] for r in cached.select("prune", 0.95)}
    assert [fdtms[n] for n in ranking] == sorted(fdtms.values(), reverse=True)


def test_plan_keeps_threshold_and_apply_plan_matches_simulation(causal_lms, tmp_path):
    model = copy.deepcopy(causal_lms["llama"])
    ref = make_ref(causal_lms["llama"], "llama")
    scan = sensitivity_scan(model, ref, methods={"int8": [8], "prune": [0.5, 0.9]}, progress=False)
    plan = build_plan(model, ref, scan, prune_levels=[0.5, 0.9], min_fdt_ratio=0.75, progress=False, base_model="tiny")
    assert plan.metrics["fdt_ratio"] >= 0.75 and plan.int8 == plan.order[:len(plan.int8)]
    assert CompressionPlan.from_json(plan.to_json()) == plan
    with torch.no_grad(), compressed(model, plan):
        simulated = model(torch.tensor([[1, 40, 41, 42]])).logits
    masks = apply_plan(model, plan)
    for name in plan.int8:
        assert isinstance(model.get_submodule(name), Int8WeightOnlyLinear)
    with torch.no_grad():
        real = model(torch.tensor([[1, 40, 41, 42]])).logits
    torch.testing.assert_close(real, simulated, atol=1e-4, rtol=1e-4)
    assert set(masks) == set(plan.sparsity)
    # safetensors round trip onto a freshly built base
    save_compressed(model, plan, tmp_path)
    fresh, plan2 = load_compressed(tiny_causal_lm("llama", seed=5), tmp_path)
    assert plan2 == plan
    with torch.no_grad():
        torch.testing.assert_close(fresh(torch.tensor([[1, 40, 41, 42]])).logits, real, atol=0, rtol=0)


def test_pruning_mask_callback_keeps_zeros_through_trainer(tmp_path):
    from datasets import Dataset
    from transformers import Trainer, TrainingArguments

    model = tiny_causal_lm("gpt2").train()
    names = list_components(model)[:2]
    plan = CompressionPlan(sparsity={names[0]: 0.8, names[1]: 0.5})
    masks = apply_plan(model, plan)
    ids = torch.randint(4, 100, (16, 12), generator=torch.Generator().manual_seed(0))
    ds = Dataset.from_dict({"input_ids": ids.tolist(), "labels": ids.tolist()})
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=4, per_device_train_batch_size=4, learning_rate=1e-2,
                             report_to=[], save_strategy="no", logging_strategy="no", use_cpu=True, disable_tqdm=True)
    before = {n: model.get_submodule(n).weight.detach().clone() for n in names}
    Trainer(model=model, args=args, train_dataset=ds, callbacks=[PruningMaskCallback(model, masks)]).train()
    for n in names:
        w = model.get_submodule(n).weight.detach().t()  # Conv1D: [in, out] -> [out, in] like the mask
        assert (w[~masks[n]] == 0).all() and not torch.equal(w, before[n].t())  # trained, zeros kept
    # without the callback the zeros regrow (the callback is what keeps them)
    Trainer(model=model, args=args, train_dataset=ds).train()
    assert (model.get_submodule(names[0]).weight.detach().t()[~masks[names[0]]] != 0).any()


def test_int8_linear_matches_dequantize_matmul_reference():
    g = torch.Generator().manual_seed(0)
    lin = torch.nn.Linear(48, 24)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(24, 48, generator=g))
    q = Int8WeightOnlyLinear.from_linear(lin)
    # reference: hand-computed absmax quantization and a float matmul
    w = lin.weight.detach()
    s = w.abs().amax(1) / 127
    qw = torch.round(w / s[:, None]).clamp(-127, 127)
    assert torch.equal(q.weight_int8.float(), qw) and torch.allclose(q.scales, s)
    x = torch.randn(3, 5, 48, generator=g)
    expect = x @ (qw * s[:, None]).t() + lin.bias
    torch.testing.assert_close(q(x), expect, atol=1e-4, rtol=1e-4)
    q.use_kernel = False
    torch.testing.assert_close(q(x), expect, atol=1e-4, rtol=1e-4)
    assert q(x.bfloat16()).dtype == torch.bfloat16
    qq, ss = quantize_absmax(torch.zeros(2, 3))
    assert (qq == 0).all() and (ss == 1).all()


def test_int8_conv1d_and_backends(causal_lms):
    gpt2 = copy.deepcopy(causal_lms["gpt2"])
    name = list_components(gpt2)[0]
    conv = gpt2.get_submodule(name)
    x = torch.randn(2, 4, conv.weight.shape[0])
    with torch.no_grad(), fake_quant(gpt2, name):
        simulated = conv(x)
    q = Int8WeightOnlyLinear.from_linear(conv)
    torch.testing.assert_close(q(x), simulated, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="unknown backend 'bnb'"):
        apply_plan(gpt2, CompressionPlan(int8=[name]), backend="bnb")
    with pytest.raises(TypeError, match="Embedding"):
        Int8WeightOnlyLinear.from_linear(torch.nn.Embedding(3, 4))


def test_coverage_curve_and_auc(causal_lms):
    model = causal_lms["gpt_neox"]
    ref = make_ref(model, "gpt_neox")
    order = list_components(model)
    curve = coverage_curve(model, ref, order, bits=4)
    assert len(curve) == len(order) + 1 and curve[0]["fdt_ratio"] == 1.0
    assert curve[-1]["param_share"] == pytest.approx(1.0)
    assert curve_auc([{"param_share": 0, "fdt_ratio": 1}, {"param_share": 0.5, "fdt_ratio": 1},
                      {"param_share": 1, "fdt_ratio": 0}]) == pytest.approx(0.75)


def test_bad_compression_inputs(causal_lms):
    model = causal_lms["llama"]
    ref = make_ref(model, "llama")
    with pytest.raises(ValueError, match="no module 'nope'"):
        with fake_quant(model, "nope"):
            pass
    with pytest.raises(ValueError, match="not an nn.Linear"):
        with weight_perturbation(model, {"model.layers.0.input_layernorm": lambda w: w}):
            pass
    with pytest.raises(ValueError, match="unknown compression method 'int4'"):
        sensitivity_scan(model, ref, methods={"int4": [4]}, progress=False)
    with pytest.raises(ValueError, match=r"methods\[.int8.\] level \(a bit width\) must be an int in \[2, 8\], got 0.5"):
        sensitivity_scan(model, ref, methods={"int8": [0.5]}, progress=False)
    with pytest.raises(ValueError, match="unknown quantization scheme"):
        with fake_quant(model, list_components(model)[0], scheme="nf4"):
            pass


def test_model_card_renders():
    from hf_ext.hub import render_model_card

    card = render_model_card("dtm_compressed", card_data={"license": "apache-2.0", "base_model": "gpt2"},
                             model_name="tiny-dtm", plan={"int8_components": 3, "int8_param_share": 0.5,
                                                          "pruned_components": 1, "mean_sparsity": 0.1,
                                                          "min_fdt_ratio": 0.9},
                             num_tokens=32, num_prompts=8,
                             fdt={"fdtm": 30.5, "fdt_median": 32, "fdt_full_share": 0.75, "sdtm": 1.0, "sdt_share": 0.03})
    text = str(card)
    assert "50.0 % of decoder-Linear parameters" in text and "| 30.50 | 32 | 0.750 |" in text


@pytest.mark.parametrize("backend, module", [("torchao", "torchao.quantization"), ("quanto", "optimum.quanto")])
def test_optional_int8_backends(backend, module):
    """Where installed, the optional backends quantize exactly the planned Linears, close to the absmax simulation."""
    pytest.importorskip(module)
    from hf_ext.dtm.compression import CompressionPlan, apply_plan, fake_quant

    model = tiny_causal_lm("llama", seed=1)
    names = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and ".layers." in n][:4]
    ids = torch.tensor([[1, 40, 41, 42, 43, 44]])
    with torch.no_grad():
        plain = model(ids).logits
        with fake_quant(model, names, bits=8):
            simulated = model(ids).logits
    quantized = copy.deepcopy(model)
    apply_plan(quantized, CompressionPlan(int8=names, sparsity={}), backend=backend)
    with torch.no_grad():
        out = quantized(ids).logits
    assert not torch.equal(out, plain)
    # torchao's int8 rounding differs slightly from per-row absmax; quanto's qint8 matches it
    tol = 2e-2 if backend == "torchao" else 1e-5
    torch.testing.assert_close(out, simulated, atol=tol, rtol=0)
