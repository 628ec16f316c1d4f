"""Cells of notebooks/04_umup.ipynb (built by notebooks/make_notebooks.py)."""

from nbformat.v4 import new_code_cell, new_markdown_cell

CELLS = [
    new_markdown_cell(
        "# u-μP: the unit-scaled maximal update parametrization as a transformers model\n\n"
        "`UMupLlamaForCausalLM` is a Llama-style causal LM whose weights are initialised N(0, 1) and whose scale lives "
        "in the ops (Blake et al., ICLR 2025). Train it with per-tensor Adam LRs from `umup_param_groups` (or "
        "`UMupTrainer`): the optimal LR is O(1) and stays put as the model gets wider. Everything here runs on CPU in "
        "seconds on tiny models."
    ),
    new_code_cell(
        "import torch\n"
        "from transformers import AutoModelForCausalLM\n"
        "from hf_ext.umup import UMupConfig, umup_param_groups\n\n"
        "torch.set_num_threads(1)  # tiny models: one thread is fastest (and no oversubscription)\n"
        "torch.manual_seed(0)\n"
        "cfg = UMupConfig(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,\n"
        "                 num_attention_heads=2, umup_attn_seq_len=32)\n"
        "model = AutoModelForCausalLM.from_config(cfg)  # registered Auto class\n"
        "print(type(model).__name__, 'weight std', round(float(model.lm_head.weight.std()), 3))\n"
        "for g in umup_param_groups(model, lr=0.5, weight_decay=1e-4):\n"
        "    print(f\"{g['name']:28} lr {g['lr']:.4f}  weight_decay {g['weight_decay']:.5f}  tensors {len(g['params'])}\")"
    ),
    new_markdown_cell(
        "## Unit scale at init\n\nThe residual stream stays at RMS ≈ 1 through the layers, and the loss at init is "
        "≈ ln(vocab) because the μP readout scales logits by 1/fan_in."
    ),
    new_code_cell(
        "ids = torch.randint(0, 256, (4, 32))\n"
        "out = model(ids, labels=ids, output_hidden_states=False)\n"
        "print('loss', round(float(out.loss), 3), 'ln 256 =', round(float(torch.log(torch.tensor(256.))), 3))\n"
        "x = model.model.embed_tokens(ids)\n"
        "print('embedding RMS', round(float(x.pow(2).mean().sqrt()), 3))"
    ),
    new_markdown_cell(
        "## Train a few steps on the standard-library source (bytes)\n\nAdamW over the u-μP groups at base LR 2^0."
    ),
    new_code_cell(
        "from hf_ext.umup.sweep import stdlib_bytes\n"
        "data = stdlib_bytes(200_000)\n"
        "opt = torch.optim.AdamW(umup_param_groups(model, lr=1.0))\n"
        "g = torch.Generator().manual_seed(0)\n"
        "for step in range(20):\n"
        "    starts = torch.randint(0, data.numel() - 33, (8,), generator=g)\n"
        "    batch = torch.stack([data[s:s + 32] for s in starts.tolist()])\n"
        "    loss = model(batch, labels=batch).loss\n"
        "    opt.zero_grad(); loss.backward(); opt.step()\n"
        "    if step % 10 == 9:\n"
        "        print(step + 1, round(float(loss), 3))\n"
        "model.eval()\n"
        "prompt = torch.tensor([list(b'def ')])\n"
        "print(bytes(model.generate(prompt, max_new_tokens=20, do_sample=False, pad_token_id=0)[0].tolist()))"
    ),
    new_markdown_cell(
        "## A tiny LR-transfer sweep\n\nu-μP vs the standard parametrisation (`LlamaForCausalLM` + one AdamW LR) at "
        "two widths. The full experiment is `hf-ext umup sweep` / `benchmarks/umup_lr_transfer.py`."
    ),
    new_code_cell(
        "import matplotlib\n"
        "matplotlib.use('Agg')\n"
        "from IPython.display import Image\n"
        "from hf_ext.umup.sweep import lr_sweep, best_lrs, plot_sweep\n"
        "rows = lr_sweep(widths=(32, 64), log2_lrs={'umup': [-2, 0], 'sp': [-9, -7]}, steps=15, seeds=(0,),\n"
        "                batch_size=4, seq_len=32, progress=False, data=data)\n"
        "print(best_lrs(rows))\n"
        "Image(str(plot_sweep(rows, 'umup_sweep.png')))"
    ),
    new_markdown_cell("## FP8 (simulated on CPU): unit-scaled tensors survive a plain E4M3 cast"),
    new_code_cell(
        "from hf_ext.umup.fp8 import fp8_error_stats, E4M3\n"
        "for std in (1.0, 1 / 64, 1e-4):\n"
        "    print(std, fp8_error_stats(torch.randn(2**16) * std, E4M3))"
    ),
]
