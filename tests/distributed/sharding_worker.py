"""Run under ``torchrun --nproc_per_node N`` (CPU, gloo) by test_core_sharding.py: FSDP2 checks on tiny models.

Every rank trains a sharded copy on its share of a fixed global batch and, in the same process, an unsharded
reference on the whole batch (the loss averaged over the ranks' shares, as the sharded run's averaged gradients).
Usage: ``torchrun --standalone --nproc_per_node N sharding_worker.py RESULT.json SCRATCH_DIR``. Rank 0 writes the
measured quantities to RESULT.json; test_core_sharding.py asserts on them.
"""

from __future__ import annotations

import copy
import json
import sys

import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor


def _train_pair(model, world, rank, steps=2, lr=1e-3):
    from hf_ext.core.sharding import gather_full_tensors, shard_model, sharding_report

    ref = copy.deepcopy(model).train()
    model.train()
    shard_model(model)
    report = sharding_report(model)
    opt, ropt = torch.optim.AdamW(model.parameters(), lr=lr), torch.optim.AdamW(ref.parameters(), lr=lr)
    data = torch.randint(3, 100, (2 * world, 12), generator=torch.Generator().manual_seed(7))
    losses, ref_losses = [], []
    for _ in range(steps):
        mine = data[2 * rank:2 * rank + 2]
        loss = model(mine, labels=mine).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        gathered = [torch.zeros(()) for _ in range(world)]
        dist.all_gather(gathered, loss.detach())
        losses.append(float(torch.stack(gathered).mean()))
        ref_loss = torch.stack([ref(data[2 * r:2 * r + 2], labels=data[2 * r:2 * r + 2]).loss for r in range(world)]).mean()
        ref_loss.backward()
        ropt.step()
        ropt.zero_grad()
        ref_losses.append(float(ref_loss))
    full = gather_full_tensors(dict(model.named_parameters()))
    ref_params = dict(ref.named_parameters())
    diff = max(float((full[n] - ref_params[n].detach()).abs().max()) for n in ref_params)
    return ref, report, diff, losses, ref_losses


def main(out: str, scratch: str) -> None:
    dist.init_process_group("gloo")
    world, rank = dist.get_world_size(), dist.get_rank()
    torch.manual_seed(0)
    from hf_ext.core.sharding import shard_like, shard_model, unsharded_copy
    from hf_ext.testing import tiny_causal_lm

    result: dict = {"world_size": world, "families": {}}
    for name, kwargs in {"llama": {}, "gpt_neox": {}, "qwen2": {}, "opt": {},
                         "gpt2_tied": {"tie_word_embeddings": True}}.items():
        family = name.split("_tied")[0]
        model = tiny_causal_lm(family, seed=1, **kwargs)
        tied_before = model.get_output_embeddings().weight is model.get_input_embeddings().weight
        ref, report, diff, losses, ref_losses = _train_pair(model, world, rank)
        plain = unsharded_copy(model)
        entry = {"report": report, "max_weight_diff": diff, "losses": losses, "ref_losses": ref_losses,
                 "tied_before": tied_before, "all_dtensor": all(isinstance(p, DTensor) for p in model.parameters())}
        if rank == 0:
            ref_sd, sd = ref.state_dict(), plain.state_dict()
            entry.update(copy_class=type(plain).__name__, ref_class=type(ref).__name__,
                         same_keys=sorted(sd) == sorted(ref_sd),
                         same_shapes_dtypes=all(sd[k].shape == ref_sd[k].shape and sd[k].dtype == ref_sd[k].dtype
                                                for k in ref_sd),
                         copy_max_diff=max(float((sd[k] - ref_sd[k]).abs().max()) for k in ref_sd),
                         tied_after=plain.get_output_embeddings().weight is plain.get_input_embeddings().weight)
            ids = torch.randint(3, 100, (2, 9), generator=torch.Generator().manual_seed(3))
            with torch.no_grad():  # the rebuilt copy computes what the trained reference computes
                entry["copy_logits_diff"] = float((plain(ids).logits - ref.eval()(ids).logits).abs().max())
        result["families"][name] = entry

    # errors: sharding twice; a tied embedding/head split over two units
    errors = {}
    try:
        shard_model(model)
    except ValueError as err:
        errors["twice"] = str(err)
    tied = tiny_causal_lm("gpt2", seed=1, tie_word_embeddings=True)
    try:
        shard_model(tied, [tied.get_input_embeddings(), tied.get_output_embeddings()])
    except ValueError as err:
        errors["tied_units"] = str(err)
    result["errors"] = errors

    # u-μP: the optimizer groups built after sharding are those of the unsharded model
    from hf_ext.umup import UMupConfig, UMupLlamaForCausalLM, umup_param_groups
    from hf_ext.umup.sharding import group_summary, shard_umup

    umup = UMupLlamaForCausalLM(UMupConfig(vocab_size=64, hidden_size=48, intermediate_size=96, num_hidden_layers=3,
                                           num_attention_heads=4, umup_attn_seq_len=16))
    plain_groups = group_summary(umup_param_groups(umup, lr=0.5, weight_decay=0.1), umup)
    shard_umup(umup)
    optimizer = torch.optim.AdamW(umup_param_groups(umup, lr=0.5, weight_decay=0.1))
    result["umup"] = {"same_groups": group_summary(optimizer, umup) == plain_groups,
                      "groups": [list(g[:4]) for g in plain_groups],
                      "all_dtensor": all(isinstance(p, DTensor) for g in optimizer.param_groups for p in g["params"])}

    # checkpoints of a sharded run: gathered to full tensors, resumed into a freshly sharded copy
    from hf_ext.diffusion.multifusion.checkpoint import load_checkpoint, write_checkpoint

    class _Acc:  # the two Accelerator attributes write_checkpoint uses
        is_main_process = rank == 0

        @staticmethod
        def wait_for_everyone():
            dist.barrier()

    base = tiny_causal_lm("llama", seed=2)
    twin = copy.deepcopy(base)
    shard_model(base)
    opt = torch.optim.AdamW(base.parameters(), lr=1e-2)
    base(torch.arange(10)[None] + 3, labels=torch.arange(10)[None] + 3).loss.backward()
    opt.step()
    write_checkpoint(_Acc, scratch, dict(base.named_parameters()), opt, {"step": 1}, sharded=True)
    shard_model(twin)
    twin_opt = torch.optim.AdamW(twin.parameters(), lr=1e-2)
    state = load_checkpoint(scratch, dict(twin.named_parameters()), twin_opt)
    same_params = all(torch.equal(p.full_tensor(), q.full_tensor())
                      for p, q in zip(base.parameters(), twin.parameters()))
    moments = [(opt.state[p]["exp_avg_sq"], twin_opt.state[q]["exp_avg_sq"])
               for p, q in zip(base.parameters(), twin.parameters())]
    same_moments = all(isinstance(b, DTensor) and torch.equal(a.full_tensor(), b.full_tensor()) for a, b in moments)
    probe = torch.arange(12, dtype=torch.float32).reshape(4, 3)
    like = next(twin.parameters())
    result["checkpoint"] = {"step": state["step"], "same_params": same_params, "same_moments": same_moments,
                            "shard_like_plain": torch.equal(shard_like(probe, probe.clone()), probe)}
    try:
        shard_like(probe, like)
    except ValueError as err:
        result["checkpoint"]["shape_error"] = str(err)
    if rank == 0:
        with open(out, "w", encoding="utf-8") as fh:
            json.dump(result, fh)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
