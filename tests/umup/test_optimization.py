"""u-μP param groups (spec oracle + unit_scaling's optimizer), UMupTrainer / umup_optimizers applying them."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hf_ext.umup import UMupConfig, UMupLlamaForCausalLM, umup_optimizers, umup_param_groups

uu = pytest.importorskip("unit_scaling")

DECODER = dict(vocab_size=256, hidden_size=256, intermediate_size=1024, num_hidden_layers=4, num_attention_heads=4)


def test_param_groups_reproduce_the_spec_decoder_example_and_unit_scaling():
    torch.manual_seed(0)
    model = UMupLlamaForCausalLM(UMupConfig(**DECODER))
    groups = umup_param_groups(model, lr=1.0, weight_decay=0.1)
    by_name = {g["name"]: (round(g["lr"], 10), round(g["weight_decay"], 10)) for g in groups}
    # spec §11: embedding 1/16; qkv/o/up/gate 1/16·1/sqrt(4); down (fan_in 1024) 1/32·1/2; readout 1; wd = 0.1/lr
    assert by_name == {"embedding": (0.0625, 1.6), "hidden.weight.fan_in=256": (0.03125, 3.2),
                       "hidden.weight.fan_in=1024": (0.015625, 6.4), "readout": (1.0, 0.1)}
    sizes = {g["name"]: len(g["params"]) for g in groups}
    assert sizes == {"embedding": 1, "hidden.weight.fan_in=256": 4 * 6, "hidden.weight.fan_in=1024": 4, "readout": 1}
    # the oracle library on its own decoder of the same shape: the same (lr, wd) per role
    ref = uu.TransformerDecoder(hidden_size=256, vocab_size=256, layers=4, heads=4)
    opt = uu.optim.AdamW(ref.parameters(), lr=1.0, weight_decay=0.1)
    ref_pairs = {(round(g["lr"], 8), round(g["weight_decay"], 8)) for g in opt.param_groups}
    ours = {(round(lr, 8), round(wd, 8)) for lr, wd in by_name.values()}
    assert ours == ref_pairs


def test_param_groups_biases_depth_and_branches_convention():
    model = UMupLlamaForCausalLM(UMupConfig(**{**DECODER, "hidden_size": 64, "intermediate_size": 128,
                                               "attention_bias": True, "umup_depth_convention": "branches"}))
    by_name = {g["name"]: g["lr"] for g in umup_param_groups(model, lr=0.5)}
    depth = 2 * 4  # 'branches': every attention and MLP branch counts
    assert by_name["hidden.bias"] == pytest.approx(0.5 / depth**0.5)
    assert by_name["hidden.weight.fan_in=64"] == pytest.approx(0.5 / 8 / depth**0.5)
    assert by_name["embedding"] == pytest.approx(0.5 / 8) and by_name["readout"] == pytest.approx(0.5)
    assert all(g["weight_decay"] == 0 for g in umup_param_groups(model, lr=0.5))


def test_param_groups_reject_role_less_parameters_by_name():
    model = UMupLlamaForCausalLM(UMupConfig(**{**DECODER, "hidden_size": 32, "intermediate_size": 64}))
    model.extra_adapter = nn.Linear(32, 4)
    with pytest.raises(ValueError, match=r"extra_adapter\.weight"):
        umup_param_groups(model, lr=1.0)
    groups = umup_param_groups(model, lr=1.0, allow_non_unit_scaling_params=True)
    assert [len(g["params"]) for g in groups if g["name"] == "non_umup"] == [2]
    with pytest.raises(ValueError, match="lr"):
        umup_param_groups(model, lr=0.0)
    with pytest.raises(ValueError, match="weight_decay"):
        umup_param_groups(model, lr=1.0, weight_decay=-1)


# --------------------------------------------------------------------------------------------- Trainer


def _tiny_model(seed=0):
    torch.manual_seed(seed)
    return UMupLlamaForCausalLM(UMupConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                           num_attention_heads=4, umup_attn_seq_len=16))


def _dataset(n=16, seq=16):
    from datasets import Dataset

    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 64, (n, seq), generator=g)
    return Dataset.from_dict({"input_ids": ids.tolist(), "labels": ids.tolist()}).with_format("torch")


def _args(tmp_path, **kw):
    from transformers import TrainingArguments

    return TrainingArguments(str(tmp_path), per_device_train_batch_size=8, max_steps=1, learning_rate=0.5,
                             lr_scheduler_type="constant", weight_decay=0.0, logging_steps=1, report_to=[],
                             save_strategy="no", use_cpu=True, disable_tqdm=True, **kw)


def _expected_lrs(model, lr):
    return {id(p): lr * g["lr_multiplier"] for g in umup_param_groups(model, lr) for p in g["params"]}


def _assert_first_adam_step_used_group_lrs(before, after, expected):
    """Adam's first step moves every weight by ≈ lr·sign(grad): the update size *measures* the applied LR."""
    for name, p in after.named_parameters():
        delta = (p.detach() - dict(before.named_parameters())[name].detach()).abs()
        moved = delta[delta > 0]
        assert moved.numel() > 0.5 * delta.numel(), name
        assert float(moved.median()) == pytest.approx(expected[name], rel=0.02), name


def test_umup_trainer_applies_the_group_lrs_and_logs_them(tmp_path):
    import copy

    from hf_ext.umup import UMupTrainer

    model = _tiny_model()
    before = copy.deepcopy(model)
    expected = {n: _expected_lrs(model, 0.5)[id(p)] for n, p in model.named_parameters()}
    assert len(set(expected.values())) >= 3  # really per-tensor LRs, not one global LR
    trainer = UMupTrainer(model=model, args=_args(tmp_path), train_dataset=_dataset())
    trainer.train()
    lrs = sorted({round(g["lr"], 8) for g in trainer.optimizer.param_groups})
    assert lrs == sorted({round(v, 8) for v in expected.values()})
    _assert_first_adam_step_used_group_lrs(before, model, expected)
    logged = [row for row in trainer.state.log_history if "lr/embedding" in row]
    assert logged and logged[0]["lr/embedding"] == pytest.approx(0.5 / 32**0.5)
    assert logged[0]["lr/readout"] == pytest.approx(0.5)


def test_overwrite_bug_is_caught(tmp_path):
    """A Trainer that merges its global optimizer kwargs into the groups (torchtitan-fork's bug) fails the check."""
    import copy

    from transformers import Trainer

    class BuggyTrainer(Trainer):
        def create_optimizer(self, model=None):
            cls, kwargs = self.get_optimizer_cls_and_kwargs(self.args, self.model)
            groups = [{**g, **kwargs} for g in umup_param_groups(self.model, self.args.learning_rate)]
            self.optimizer = cls(groups, **kwargs)
            return self.optimizer

    model = _tiny_model()
    before = copy.deepcopy(model)
    expected = {n: _expected_lrs(model, 0.5)[id(p)] for n, p in model.named_parameters()}
    BuggyTrainer(model=model, args=_args(tmp_path), train_dataset=_dataset()).train()
    with pytest.raises(AssertionError):
        _assert_first_adam_step_used_group_lrs(before, model, expected)


def test_umup_optimizers_helper_for_a_plain_trainer(tmp_path):
    import copy

    from transformers import Trainer

    model = _tiny_model(1)
    before = copy.deepcopy(model)
    expected = {n: _expected_lrs(model, 0.5)[id(p)] for n, p in model.named_parameters()}
    args = _args(tmp_path)
    trainer = Trainer(model=model, args=args, train_dataset=_dataset(), optimizers=umup_optimizers(model, args, 1))
    trainer.train()
    _assert_first_adam_step_used_group_lrs(before, model, expected)
