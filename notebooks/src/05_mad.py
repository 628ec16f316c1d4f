"""Cells of notebooks/05_mad.ipynb (built by notebooks/make_notebooks.py)."""

from nbformat.v4 import new_code_cell, new_markdown_cell

CELLS = [
    new_markdown_cell(
        "# MAD: synthetic capability tasks as Hugging Face datasets\n\n"
        "*Mechanistic Design and Scaling of Hybrid Architectures* (Poli, Thomas, Nguyen et al., ICML 2024) screens "
        "architectures on six small synthetic tasks: in-context recall, noisy and fuzzy recall, selective copying, "
        "compression and memorization. `hf_ext.mad` generates them byte-identical to the reference code "
        "(`athms/mad-lab`), ships them as `datasets` objects, and runs the benchmark on any model: MADStack striped "
        "hybrids (attention, SwiGLU, Mamba, Hyena), any transformers causal LM, or u-μP."
    ),
    new_markdown_cell("## 1. The tasks and the 66-setting grid"),
    new_code_cell(
        "import numpy as np\n"
        "import hf_ext.mad.models  # torch + transformers, imported once here\n"
        "from hf_ext.mad import baseline, benchmark_grid, generate_splits, arrays_sha256\n\n"
        "grid = benchmark_grid()\n"
        "print(len(grid), 'settings, e.g.', [c.name for c in grid[:3]])\n"
        "cfg = baseline('in-context-recall', num_train_examples=64, num_test_examples=16)\n"
        "s = generate_splits(cfg)\n"
        "x, y = s['test']\n"
        "print('input ', x[0, :16].tolist())\n"
        "print('target', y[0, :16].tolist(), '(-100 = not scored; the value is predicted at the key position)')\n"
        "print('parity with mad-lab:', arrays_sha256(*s['train'], *s['test']) == "
        "'a0442f227f9102e3d25bc3a8f5f1581ffbc3197b1799dbe901001367f38521e5')"
    ),
    new_markdown_cell(
        "## 2. As `datasets` objects\n\n`load_mad` goes through a builder class (datasets 5 has no loading scripts); "
        "overrides use mad-lab's setting names. `mode='fast'` draws every example from a counter-based seed: random "
        "access, sharding, streaming, and a test split independent of the train size."
    ),
    new_code_cell(
        "import tempfile\n"
        "from hf_ext.mad import load_mad\n\n"
        "cache = tempfile.mkdtemp()\n"
        "dd = load_mad('selective-copying', cache_dir=cache, num_train_examples=256, num_test_examples=64, vocab_size=32)\n"
        "print(dd)\n"
        "stream = load_mad('fuzzy-in-context-recall', split='train', streaming=True, mode='fast', cache_dir=cache)\n"
        "print(next(iter(stream))['input_ids'][:20])"
    ),
    new_markdown_cell(
        "## 3. Train a tiny striped model\n\nMAD targets are already aligned with the inputs: `MADCollator` emits "
        "`shift_labels` so transformers models do not shift them twice. Here a 4-layer MADStack learns in-context "
        "recall (an induction-head task) in about 600 steps (shortened here); `test_acc` is mad-lab's macro accuracy at the "
        "lowest-test-perplexity epoch."
    ),
    new_code_cell(
        "from hf_ext.mad import make_model, train_run\n\n"
        "cr = baseline('CR', vocab_size=16, seq_len=32, num_train_examples=256, num_test_examples=64)\n"
        "model = make_model('mA Sg mA Sg', cr, hidden_size=64, num_heads=4, seed=0)\n"
        "# 3 short epochs keep this cell fast; 1024 examples x 30 epochs pass 0.9 (the test suite pins that run)\n"
        "res = train_run(model, cr, generate_splits(cr), lr=3e-3, weight_decay=0.0, epochs=3, batch_size=32,\n"
        "                seed=0, early_stop_acc=0.95)\n"
        "print(f'test accuracy {res.test_acc:.3f} after {res.steps} steps')\n"
        "print([round(h['test_acc'], 2) for h in res.history])"
    ),
    new_markdown_cell(
        "## 4. The benchmark runner and its report\n\n`hf-ext mad run --arch ... --lite` trains the six baselines "
        "(here with toy sizes); `--full` runs the 396 (setting × lr × wd) jobs, resumable, split over Accelerate "
        "processes. The report is mad-lab's aggregation: best over the sweep, mean per task, mean over tasks."
    ),
    new_code_cell(
        "from hf_ext.mad import run_benchmark, mad_report\n"
        "from IPython.display import Image, Markdown\n\n"
        "out = tempfile.mkdtemp()\n"
        "for arch in ['mA Sg mA Sg', 'H Sg mA Sg']:\n"
        "    run_benchmark(arch, preset='lite', tasks=['CR', 'M'], out_dir=out, epochs=1, hidden_size=32, num_heads=4,\n"
        "                  batch_size=64, overrides={'num_train_examples': 64, 'num_test_examples': 32}, progress=False)\n"
        "paths = mad_report(out, out + '/report')\n"
        "display(paths['table'].round(3))\n"
        "Image(str(paths['bars']))"
    ),
    new_markdown_cell(
        "## 5. Publish\n\n`export_parquet` writes every config as parquet plus a dataset card (`configs:` YAML, numpy "
        "and generator versions, per-config sha256, mad-lab folder names); upload with `push_mad_to_hub` and load with "
        "plain `datasets.load_dataset(repo, config)`."
    ),
    new_code_cell(
        "from hf_ext.mad import export_parquet\n"
        "import datasets\n\n"
        "m = baseline('M', num_train_examples=16, num_test_examples=8)\n"
        "folder = export_parquet(tempfile.mkdtemp(), [m], progress=False)\n"
        "print((folder / 'README.md').read_text()[:400])\n"
        "print(datasets.load_dataset(str(folder), m.name, split='train'))"
    ),
]
