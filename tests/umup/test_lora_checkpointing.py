"""u-μP with peft LoRA (custom-module mapping): the adapter path is the weight delta through the unit-scaled op
(checked against a hand-written closed form), a few training steps change the model, and the merged model equals the
LoRA model; gradient checkpointing leaves loss and gradients unchanged while recomputing the layers."""

from __future__ import annotations

import pytest
import torch

from hf_ext.umup import UMupConfig, UMupLinear, UMupLlamaForCausalLM

peft = pytest.importorskip("peft")
from hf_ext.umup.lora import UMupLoraLinear, umup_lora_config  # noqa: E402 - needs peft

SETTINGS = [
    dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
         num_key_value_heads=2, umup_attn_seq_len=16),
    dict(vocab_size=97, hidden_size=48, intermediate_size=80, num_hidden_layers=3, num_attention_heads=6,
         num_key_value_heads=6, umup_attn_seq_len=24, umup_alpha_attn_softmax=2.0, umup_alpha_ffn_act=0.5,
         attention_bias=True),
]


def _model(seed: int = 0, **cfg) -> UMupLlamaForCausalLM:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return UMupLlamaForCausalLM(UMupConfig(**cfg))


def test_adapter_path_is_the_weight_delta_through_the_unit_scaled_op():
    torch.manual_seed(0)
    base = UMupLinear(24, 40)
    layer = UMupLoraLinear(base, "default", config=umup_lora_config(r=3, lora_alpha=6, target_modules=["x"]), r=3,
                           lora_alpha=6)
    torch.nn.init.normal_(layer.lora_B["default"].weight)
    x = torch.randn(5, 7, 24)
    a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight
    for fwd in (1.0, 0.37):
        expected = fwd * (x @ (base.weight + 2.0 * b @ a).T) / 24 ** 0.5  # m · x (W + (alpha/r) B A)ᵀ / sqrt(fan_in)
        torch.testing.assert_close(layer(x, fwd_mult=fwd), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("setting", SETTINGS, ids=["gqa", "mha-bias-alphas"])
def test_lora_trains_and_merges_exactly(setting):
    base = _model(**setting)
    ids = torch.randint(setting["vocab_size"], (4, 16), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        reference = base(ids).logits
    model = peft.get_peft_model(base, umup_lora_config(r=4, lora_alpha=8, lora_dropout=0.0))
    adapted = [m for m in model.modules() if isinstance(m, UMupLoraLinear)]
    assert len(adapted) == 7 * setting["num_hidden_layers"]
    assert all(not p.requires_grad for n, p in model.named_parameters() if "lora_" not in n)
    with torch.no_grad():
        assert torch.equal(model(ids).logits, reference)  # B = 0 at init
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    losses = []
    for _ in range(4):
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    model.eval()
    with torch.no_grad():
        lora_logits = model(ids).logits
        assert (lora_logits - reference).abs().max() > 1e-3
        with model.disable_adapter():
            torch.testing.assert_close(model(ids).logits, reference)
    merged = model.merge_and_unload()
    assert not any(isinstance(m, UMupLoraLinear) for m in merged.modules())
    assert isinstance(merged.model.layers[0].self_attn.q_proj, UMupLinear)
    with torch.no_grad():
        torch.testing.assert_close(merged(ids).logits, lora_logits, rtol=1e-5, atol=1e-5)


def test_lora_parameters_get_one_group_in_umup_param_groups():
    from hf_ext.umup import umup_param_groups

    setting = SETTINGS[0]
    model = peft.get_peft_model(_model(**setting), umup_lora_config(r=2))
    with pytest.raises(ValueError, match="no u-μP role"):
        umup_param_groups(model, lr=0.5)
    (group,) = umup_param_groups(model, lr=0.01, allow_non_unit_scaling_params=True)
    assert group["name"] == "non_umup" and group["lr"] == 0.01
    assert len(group["params"]) == 2 * 7 * setting["num_hidden_layers"]  # A and B of every adapted linear


def test_lora_rejects_unsupported_options():
    base = UMupLinear(8, 8)
    with pytest.raises(ValueError, match="fan_in_fan_out"):
        UMupLoraLinear(base, "default", config=umup_lora_config(r=2, fan_in_fan_out=True), r=2)
    with pytest.raises(ValueError, match="not supported on UMupLinear"):
        peft.get_peft_model(_model(**SETTINGS[0]), umup_lora_config(r=2, use_dora=True))
    with pytest.raises(TypeError, match="peft.LoraConfig"):
        from hf_ext.umup.lora import register_umup_lora

        register_umup_lora({"r": 2})


def _enable_checkpointing(model) -> None:
    enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
    enable()


@pytest.mark.parametrize("setting", SETTINGS, ids=["gqa", "mha-bias-alphas"])
def test_gradient_checkpointing_gives_the_same_loss_and_gradients(setting, monkeypatch):
    import hf_ext.umup.modeling_umup as modeling

    calls = []
    mlp_forward = modeling.UMupMLP.forward
    # counted in forward itself: torch's checkpoint recomputes the layer without firing module hooks
    monkeypatch.setattr(modeling.UMupMLP, "forward", lambda self, x: calls.append(1) or mlp_forward(self, x))
    model = _model(**setting).train()
    ids = torch.randint(setting["vocab_size"], (3, 16), generator=torch.Generator().manual_seed(2))
    mask = torch.ones_like(ids)
    mask[0, :3] = 0  # padded row: the boolean-mask attention path


    def loss_and_grads():
        model.zero_grad()
        calls.clear()
        loss = model(ids, attention_mask=mask, labels=ids).loss
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}, len(calls)

    loss0, grads0, calls0 = loss_and_grads()
    _enable_checkpointing(model)
    assert model.model.layers[0].gradient_checkpointing
    loss1, grads1, calls1 = loss_and_grads()
    n = setting["num_hidden_layers"]
    assert (calls0, calls1) == (n, 2 * n)  # every layer is recomputed in the backward pass
    torch.testing.assert_close(loss1, loss0, rtol=0, atol=0)
    for name, grad in grads0.items():
        torch.testing.assert_close(grads1[name], grad, rtol=1e-6, atol=1e-7, msg=name)
