"""Cells of notebooks/00_getting_started.ipynb (built by notebooks/make_notebooks.py)."""

from nbformat.v4 import new_code_cell, new_markdown_cell

CELLS = [
    new_markdown_cell(
        "# hf_ext — getting started\n\n"
        "`hf_ext` implements several research results as Hugging Face-native components. This notebook checks "
        "the installation, builds a tiny model **in code** (nothing is downloaded) and runs the `environment` "
        "step of the tour — the same thing `hf-ext env` and `hf-ext tour --steps environment` do on the "
        "command line. It runs offline on a CPU in a few seconds."
    ),
    new_markdown_cell("## 1. Versions and device\n\n`hf_ext.cli.environment_info()` is what `hf-ext env --json` prints."),
    new_code_cell(
        "import hf_ext\n"
        "from hf_ext.cli import environment_info, format_environment\n\n"
        "info = environment_info()\n"
        "print(format_environment(info))\n"
        "assert info['versions']['hf_ext'] == hf_ext.__version__"
    ),
    new_markdown_cell(
        "## 2. A tiny model built in code\n\n"
        "`hf_ext.testing` builds seeded tiny causal LMs of five families (`CAUSAL_LM_FAMILIES`) and a "
        "character-level tokenizer. Tests, notebooks, the tour and the benchmarks all use them. They are "
        "ordinary `transformers` models: anything that works on GPT-2 works on them."
    ),
    new_code_cell(
        "import torch\n"
        "from hf_ext.testing import CAUSAL_LM_FAMILIES, tiny_causal_lm, tiny_tokenizer\n\n"
        "model = tiny_causal_lm('gpt2', seed=0)\n"
        "tok = tiny_tokenizer()\n"
        "batch = tok(['Hello, world!', 'Hi'], return_tensors='pt', padding=True)\n"
        "with torch.no_grad():\n"
        "    logits = model(**batch).logits\n"
        "print(type(model).__name__, f'{model.num_parameters():,} parameters', 'families:', CAUSAL_LM_FAMILIES)\n"
        "print('input ids', tuple(batch.input_ids.shape), '-> logits', tuple(logits.shape))\n"
        "assert logits.shape == (*batch.input_ids.shape, model.config.vocab_size)\n"
        "# same seed -> same weights\n"
        "assert torch.equal(tiny_causal_lm('gpt2', seed=0).lm_head.weight, model.lm_head.weight)"
    ),
    new_markdown_cell(
        "## 3. The tour, programmatically\n\n"
        "`run_tour` runs registered steps, prints the result table and writes "
        "`runs/tour-<timestamp>/report.md` with the plots. Each component adds its own step."
    ),
    new_code_cell(
        "from hf_ext.tour import registered_steps, run_tour\n\n"
        "print({name: step.component for name, step in registered_steps().items()})\n"
        "run = run_tour(['environment'], out='runs', progress=False)\n"
        "assert run.exit_code == 0\n"
        "run.records[0].result.metrics"
    ),
    new_code_cell(
        "from IPython.display import Image, Markdown, display\n\n"
        "result = run.records[0].result\n"
        "display(Markdown(result.summary))\n"
        "for path in result.artifacts:\n"
        "    if path.suffix == '.png':\n"
        "        display(Image(filename=str(path)))\n"
        "print('report:', run.report_path)"
    ),
]
