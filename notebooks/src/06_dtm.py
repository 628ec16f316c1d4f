"""Cells of notebooks/06_dtm.ipynb (built by notebooks/make_notebooks.py)."""

from nbformat.v4 import new_code_cell, new_markdown_cell

CELLS = [
    new_markdown_cell(
        "# Divergent token metrics (FDTM/SDTM) and FDTM-guided compression\n\n"
        "FDT = how many leading tokens of the base model's greedy continuation a compressed model reproduces; "
        "SDT = how many it gets wrong. Computed by **one teacher-forced forward** (`hf_ext.dtm.score`). "
        "Tiny models built in code; swap in any `AutoModelForCausalLM`."
    ),
    new_code_cell(
        "import copy\n"
        "import torch\n"
        "from hf_ext import dtm\n"
        "from hf_ext.testing import tiny_causal_lm\n\n"
        "base = tiny_causal_lm('llama')\n"
        "prompts = [[1, 40, 41, 42], [1, 50, 51], [1, 60, 61, 62, 63]]\n"
        "ref = dtm.reference(base, prompts, max_new_tokens=24, eos_token_id=[], progress=False)\n"
        "print(dtm.score(base, ref).aggregate())  # identity: FDT = N, SDT = 0"
    ),
    new_markdown_cell("## A perturbed candidate: teacher-forced vs aligned (who-what-benchmark) variant"),
    new_code_cell(
        "cand = copy.deepcopy(base)\n"
        "with torch.no_grad():\n"
        "    w = cand.model.layers[-1].mlp.down_proj.weight\n"
        "    w.add_(torch.randn(w.shape, generator=torch.Generator().manual_seed(0)) * w.std())\n"
        "tf = dtm.score(cand, ref, base=base)\n"
        "al = dtm.score_aligned(cand, ref)\n"
        "print('teacher-forced FDT', tf.fdt.tolist(), 'SDT', tf.sdt.tolist())\n"
        "print('aligned        FDT', al.fdt.tolist(), 'SDT', al.sdt.tolist())"
    ),
    new_markdown_cell("## Sensitivity scan (depth-prefix caching) and an int8 plan on a briefly trained model"),
    new_code_cell(
        "from hf_ext.dtm.toy import train_toy_lm\n"
        "from hf_ext.dtm.compression import random_order\n"
        "model, prompts = train_toy_lm(0, steps=60, num_layers=2, num_prompts=8, progress=False)\n"
        "ref = dtm.reference(model, prompts, max_new_tokens=24, eos_token_id=[], progress=False)\n"
        "scan = dtm.sensitivity_scan(model, ref, methods={'int8': [4], 'prune': [0.5]}, progress=False)\n"
        "for row in sorted(scan.select('int8'), key=lambda r: -r['fdtm'])[:5]:\n"
        "    print(f\"{row['component']:40} FDTM {row['fdtm']:5.1f}  ppl {row['ppl']:.3f}\")"
    ),
    new_code_cell(
        "import matplotlib\n"
        "matplotlib.use('Agg')\n"
        "import matplotlib.pyplot as plt\n"
        "order = scan.ranking('int8')\n"
        "fig, ax = plt.subplots(figsize=(5, 3))\n"
        "for name, o in {'FDTM order': order, 'perplexity order': scan.ranking('int8', by='ppl'),\n"
        "                'random order': random_order(order, 0)}.items():\n"
        "    curve = dtm.coverage_curve(model, ref, o, bits=4)\n"
        "    ax.plot([p['param_share'] for p in curve], [p['fdt_ratio'] for p in curve], marker='.',\n"
        "            label=f'{name} (AUC {dtm.curve_auc(curve):.3f})')\n"
        "ax.set_xlabel('share of parameters quantized (4-bit stress level)'); ax.set_ylabel('mean FDT / N'); ax.legend()\n"
        "plt.show()"
    ),
    new_code_cell(
        "scan8 = dtm.sensitivity_scan(model, ref, methods={'int8': [8], 'prune': [0.5]}, progress=False)\n"
        "plan = dtm.build_plan(model, ref, scan8, prune_levels=[0.5], min_fdt_ratio=0.9, progress=False)\n"
        "print(plan.summary(model))\n"
        "small = copy.deepcopy(model)\n"
        "masks = dtm.apply_plan(small, plan)  # real int8 weight-only Linear (torch._weight_int8pack_mm)\n"
        "print(dtm.score(small, ref).aggregate()['fdtm'], 'of N =', 24)"
    ),
]
