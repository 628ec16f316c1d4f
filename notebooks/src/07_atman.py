"""Cells of notebooks/07_atman.ipynb (built by notebooks/make_notebooks.py)."""

from nbformat.v4 import new_code_cell, new_markdown_cell

CELLS = [
    new_markdown_cell(
        "# AtMan: explanations and steering by attention manipulation\n\n"
        "AtMan suppresses one prompt item at a time *inside attention* (every layer and head) and measures how much the "
        "target's cross-entropy changes: Δ = CE(original) − CE(suppressed), negative = important. No gradients, memory of "
        "one inference forward. Runs offline on tiny models built in code; swap in any Hub causal LM."
    ),
    new_markdown_cell("## 1. A model with a known answer\n\nA 1-layer Llama trained for a few seconds to output the prompt's 3rd letter."),
    new_code_cell(
        "import string, torch\n"
        "from hf_ext.atman import AtManExplainer, AtManControl, deletion_auc, generate_steered\n"
        "from hf_ext.testing import tiny_causal_lm, tiny_tokenizer\n\n"
        "tok = tiny_tokenizer()\n"
        "model = tiny_causal_lm('llama', hidden_size=32, num_layers=1).train()\n"
        "letters = torch.tensor(tok.convert_tokens_to_ids(list(string.ascii_lowercase)))\n"
        "gen = torch.Generator().manual_seed(0)\n"
        "opt = torch.optim.Adam(model.parameters(), lr=1e-2)\n"
        "for step in range(250):\n"
        "    x = letters[torch.randint(0, 26, (64, 8), generator=gen)]\n"
        "    loss = torch.nn.functional.cross_entropy(model(torch.cat([torch.ones(64, 1, dtype=torch.long), x], 1)).logits[:, -1], x[:, 2])\n"
        "    opt.zero_grad(); loss.backward(); opt.step()\n"
        "model.eval()\n"
        "print(f'final loss {loss.item():.3f}')"
    ),
    new_markdown_cell("## 2. Explain\n\nPerturbations are batched and reuse the base pass's KV cache before the first suppressed position."),
    new_code_cell(
        "explainer = AtManExplainer(model, tok, suppression_factor=0.0, max_batch_size=16, progress=False)\n"
        "exp = explainer.explain('qwertyui', 'e')\n"
        "for unit, imp in zip(exp.units, exp.importance().tolist()):\n"
        "    print(f'{unit.label!r:8} loss rise when suppressed: {imp:8.3f}')\n"
        "from IPython.display import HTML\n"
        "HTML(exp.to_html())"
    ),
    new_markdown_cell("## 3. Faithfulness: deletion AUC vs random order (lower = more faithful)"),
    new_code_cell(
        "res = deletion_auc(explainer, 'qwertyui', 'e', n_random=8, explanation=exp)\n"
        "print(f\"AtMan {res['atman_auc']:.3f}  random {res['random_auc']:.3f}  faithfulness {res['faithfulness']:.3f}\")\n"
        "assert res['faithfulness'] > 0"
    ),
    new_markdown_cell("## 4. Any causal LM: five families, granularities, modes\n\nRandom weights here, so the maps are noise; the point is the API."),
    new_code_cell(
        "for family in ['llama', 'gpt2', 'gpt_neox', 'qwen2', 'opt']:\n"
        "    m = tiny_causal_lm(family)\n"
        "    for mode in ['log_additive', 'multiplicative']:\n"
        "        e = AtManExplainer(m, tok, mode=mode, conceptual_threshold=0.6, max_batch_size=8, progress=False)\n"
        "        x = e.explain('One cat. Two dogs!', ' ok', granularity='sentence')\n"
        "        print(family, mode, [u.label for u in x.units], [round(v, 4) for v in x.scores('square').tolist()])"
    ),
    new_markdown_cell("## 5. Steering during `generate()` (KV cache on)"),
    new_code_cell(
        "plain = generate_steered(model, tok, 'qwertyui', [], max_new_tokens=1, do_sample=False)\n"
        "steered = generate_steered(model, tok, 'qwertyui', [AtManControl(2, 1, 0.0)], max_new_tokens=1, do_sample=False)\n"
        "print('plain:', tok.decode(plain[0, -1:]), ' with the 3rd letter suppressed:', tok.decode(steered[0, -1:]))"
    ),
    new_markdown_cell("## 6. VLM: image tiles of a tiny Llava\n\nThe manipulation acts in the language model only; the vision tower runs once."),
    new_code_cell(
        "from hf_ext.testing import tiny_llava, tiny_llava_inputs\n"
        "vlm, _ = tiny_llava(with_processor=False)\n"
        "inputs = tiny_llava_inputs(vlm, batch=1, text_len=3)\n"
        "img = AtManExplainer(vlm, max_batch_size=4, progress=False).explain_image(inputs, torch.tensor([40, 41]), tile=2)\n"
        "print(img.image_grid, img.scores('square').view(*img.image_grid))"
    ),
]
