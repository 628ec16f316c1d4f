"""u-μP training with Accelerate: 2 CPU processes (gloo DDP) reach the weights of a plain 1-process loop."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hf_ext.testing import time_factor

SCRIPT = Path(__file__).with_name("ddp_train.py")


def _single_process_reference():
    """The same 2 steps in one process on the full global batch, without Accelerate."""
    from hf_ext.umup import UMupConfig, UMupLlamaForCausalLM, umup_param_groups

    torch.manual_seed(0)
    model = UMupLlamaForCausalLM(UMupConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                            num_attention_heads=4, umup_attn_seq_len=16))
    opt = torch.optim.AdamW(umup_param_groups(model, lr=0.5, weight_decay=0.01))
    data = torch.randint(0, 64, (8, 16), generator=torch.Generator().manual_seed(1))
    for _ in range(2):
        loss = model(data, labels=data).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    return {k: v.detach() for k, v in model.state_dict().items()}


@pytest.mark.slow
@pytest.mark.multiprocess
def test_two_processes_equal_one_process(tmp_path):
    from safetensors.torch import load_file
    from transformers.testing_utils import get_torch_dist_unique_port

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
           str(get_torch_dist_unique_port()), str(SCRIPT), str(tmp_path / "two.safetensors")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600 * time_factor(), cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    two, one = load_file(tmp_path / "two.safetensors"), _single_process_reference()
    assert one.keys() == two.keys()
    # DDP averages the two ranks' gradients; u-μP's unit-scaled gradients of a half batch differ from the full batch's
    # by a global factor (1/sqrt(tokens) in every weight gradient) that Adam is invariant to: the weights agree.
    for k in one:
        torch.testing.assert_close(two[k], one[k], atol=2e-5, rtol=1e-4, msg=lambda m, k=k: f"{k}: {m}")
