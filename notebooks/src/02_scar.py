"""Cells of notebooks/02_scar.ipynb (built by notebooks/make_notebooks.py)."""

from nbformat.v4 import new_code_cell, new_markdown_cell

CELLS = [
    new_markdown_cell(
        "# SCAR: sparse conditioned autoencoders for concept detection and steering\n\n"
        "A SCAR adapter is a TopK sparse autoencoder on one activation site of a causal LM whose first latent(s) are "
        "trained as concept logits (Härle et al., 2024). It **detects** the concept per token (σ(z_c)) and **steers** "
        "generation by scaling or replacing that latent. Everything here runs offline on tiny models built in code."
    ),
    new_markdown_cell("## 1. Attach an adapter to any causal LM\n\nOff by default: the base model stays bit-identical."),
    new_code_cell(
        "import torch\n"
        "from hf_ext.scar import ScarAdapter, ScarModel\n"
        "from hf_ext.testing import tiny_causal_lm\n\n"
        "ids = torch.tensor([[1, 5, 6, 7], [1, 8, 9, 10]])\n"
        "for family in ['llama', 'gpt2', 'gpt_neox', 'qwen2', 'opt']:\n"
        "    model = tiny_causal_lm(family)\n"
        "    base = model(ids).logits\n"
        "    scar = ScarAdapter.for_model(model, layer=1, site='mlp', concepts=['toxicity', 'style']).attach(model)\n"
        "    with scar.steer({'toxicity': torch.tensor([1.0, 1.0])}, output='error_preserving'):\n"
        "        same = model(ids).logits\n"
        "    with scar.reconstruct():\n"
        "        rec = model(ids).logits\n"
        "    print(f'{family:9} off == base: {torch.equal(model(ids).logits, base)}, error-preserving α=1 == base: '\n"
        "          f'{torch.equal(same, base)}, reconstruct max |Δlogit| {float((rec - base).abs().max()):.3f}')"
    ),
    new_markdown_cell(
        "## 2. The toy experiment: train an LM, train SCAR, detect and steer\n\n"
        "A 2-layer Llama learns sentences whose words are either all from a *concept* list (`hate`, `war`, …) or all "
        "neutral (`cat`, `sun`, …). SCAR is trained with `transformers.Trainer` on cached residual-stream activations "
        "(loss = NMSE + BCE of latent 0 against the sentence label copied to its tokens)."
    ),
    new_code_cell(
        "from hf_ext.scar.toy import run_toy_experiment\n"
        "res = run_toy_experiment(seed=0, progress=False)\n"
        "print(f\"held-out detection AUROC {res['auroc']:.3f}\")\n"
        "print(f\"concept-word rate: off {res['rate_base']:.2f}, away {res['rate_away']:.2f}, towards {res['rate_towards']:.2f}\")\n"
        "print(f\"mean FDT vs base (N={res['max_new_tokens']}): α=1 {res['fdt_alpha_1']}, α=1.1 {res['fdt_alpha_near_1']}, \"\n"
        "      f\"reference replace α=1 {res['fdt_replace_alpha_1']}\")\n"
        "for name in ['base', 'away', 'towards']:\n"
        "    print(f'{name:8}', res['prompts'][:2], '→', res['generations'][name][:2])"
    ),
    new_markdown_cell("## 3. Detection per token"),
    new_code_cell(
        "model, tok, scar = res['model'], res['tokenizer'], res['adapter']\n"
        "det = scar.detect(['the cat and the sun .', 'the cat and the war .'], tok)\n"
        "for i in range(2):\n"
        "    toks = tok.convert_ids_to_tokens(det.input_ids[i][det.mask[i]].tolist())\n"
        "    print([f'{t}:{p:.2f}' for t, p in zip(toks, det.token_probs[i][det.mask[i]][:, 0].tolist())],\n"
        "          f'sequence p = {det.sequence_probs[i, 0]:.2f}')"
    ),
    new_markdown_cell(
        "## 4. Per-row steering in one `generate()` call, save and reload\n\n"
        "`ScarModel` wraps base + adapter; `steering=` takes one strength per batch row (here: away, off, towards)."
    ),
    new_code_cell(
        "import tempfile\n"
        "sm = ScarModel(scar.config, model=model, adapter=scar)\n"
        "enc = tok(['the war and the'] * 3, return_tensors='pt')\n"
        "out = sm.generate(**enc, max_new_tokens=6, do_sample=False, pad_token_id=0,\n"
        "                  steering={'concept': torch.tensor([-20.0, 1.0, 1.0])}, steering_output='error_preserving')\n"
        "print(tok.batch_decode(out[:, enc.input_ids.shape[1]:], skip_special_tokens=True))\n"
        "folder = tempfile.mkdtemp()\n"
        "scar.save_pretrained(folder, detection_auroc={'concept': res['auroc']})\n"
        "import os; print(sorted(os.listdir(folder)))\n"
        "before = scar.detect(['the war .'], tok).token_probs\n"
        "scar.detach()\n"
        "again = ScarAdapter.from_pretrained(folder, model)\n"
        "print('reloaded adapter detects identically:', torch.equal(again.detect(['the war .'], tok).token_probs, before))"
    ),
    new_markdown_cell(
        "## 5. Offline toxicity scoring\n\n`alt-profanity-check` is the default scorer; any `list[str] -> floats` callable plugs in."
    ),
    new_code_cell(
        "from hf_ext.scar import toxicity_scores\n"
        "print(toxicity_scores(['have a nice day', 'you stupid idiot']))"
    ),
]
