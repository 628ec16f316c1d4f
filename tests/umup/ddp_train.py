"""Trains a tiny UMupLlamaForCausalLM for 2 steps with Accelerate (run by test_accelerate.py, 1 or N processes).

Usage: python ddp_train.py OUT.safetensors  (under torchrun / accelerate launch for N processes). Every process
takes its contiguous share of one fixed global batch; rank 0 saves the final parameters.
"""

import sys

import torch
from accelerate import Accelerator
from safetensors.torch import save_file

from hf_ext.umup import UMupConfig, UMupLlamaForCausalLM, umup_param_groups


def main(out):
    acc = Accelerator(cpu=True)
    torch.manual_seed(0)
    model = UMupLlamaForCausalLM(UMupConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                            num_attention_heads=4, umup_attn_seq_len=16))
    opt = torch.optim.AdamW(umup_param_groups(model, lr=0.5, weight_decay=0.01))
    model, opt = acc.prepare(model, opt)
    data = torch.randint(0, 64, (8, 16), generator=torch.Generator().manual_seed(1))
    n = data.shape[0] // acc.num_processes
    for _ in range(2):
        local = data[acc.process_index * n:(acc.process_index + 1) * n]
        loss = model(local, labels=local).loss
        opt.zero_grad()
        acc.backward(loss)
        opt.step()
    lrs = sorted({round(g["lr"], 8) for g in opt.param_groups})
    assert len(lrs) >= 3, lrs
    if acc.is_main_process:
        save_file({k: v.detach().contiguous() for k, v in acc.unwrap_model(model).state_dict().items()}, out)
    acc.wait_for_everyone()


if __name__ == "__main__":
    main(sys.argv[1])
