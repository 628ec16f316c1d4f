"""Cells of notebooks/01_core.ipynb (built by notebooks/make_notebooks.py)."""

from nbformat.v4 import new_code_cell, new_markdown_cell

CELLS = [
    new_markdown_cell(
        "# hf_ext core: anatomy, resuming from a layer, hooks, attention controls, scoring\n\n"
        "The pieces every component builds on, shown on tiny models built in code (swap in any Hub causal LM: "
        "`AutoModelForCausalLM.from_pretrained(...)`). Runs offline on a CPU in seconds."
    ),
    new_markdown_cell("## 1. Anatomy of five families\n\n`get_anatomy` finds layers, attention, MLP, norm and head by walking the module tree."),
    new_code_cell(
        "import torch\n"
        "from hf_ext.core import get_anatomy, run_layers, attention_controls, key_weights, spans_to_key_positions\n"
        "from hf_ext.core import forward_hooks, rows, position_ids_from_mask, teacher_forced_logprobs\n"
        "from hf_ext.testing import CAUSAL_LM_FAMILIES, tiny_causal_lm, tiny_tokenizer\n\n"
        "models = {f: tiny_causal_lm(f) for f in CAUSAL_LM_FAMILIES}\n"
        "tok = tiny_tokenizer()\n"
        "for family, model in models.items():\n"
        "    a = get_anatomy(model)\n"
        "    print(f'{family:9} layers at {a.layers_path:22} attention={type(a.attentions[0]).__name__:17} '\n"
        "          f'mlp_out={type(a.mlp_outputs[0]).__name__:10} rotary={a.rotary_emb is not None}')"
    ),
    new_markdown_cell("## 2. Resume the decoder from layer *l*\n\nThe logits of `run_layers` from any layer equal the full forward, padding included."),
    new_code_cell(
        "enc = tok(['the cat sat on the mat', 'a dog'], padding=True, return_tensors='pt')\n"
        "pos = position_ids_from_mask(enc.attention_mask)\n"
        "for family, model in models.items():\n"
        "    with torch.no_grad():\n"
        "        full = model(**enc, position_ids=pos, output_hidden_states=True)\n"
        "        resumed = run_layers(model, full.hidden_states[1], 1, enc.attention_mask, pos, return_logits=True)\n"
        "    real = enc.attention_mask.bool()\n"
        "    err = (resumed - full.logits)[real].abs().max().item()\n"
        "    print(f'{family:9} max |logit difference| = {err:.1e}')\n"
        "    assert err < 1e-4"
    ),
    new_markdown_cell(
        "## 3. Attention controls: remove or scale keys inside attention\n\n"
        "Weights of 1 change nothing; weight 0 (log-additive) removes a key exactly; rows before the key are untouched "
        "(causality). Here: how much removing each character of the prompt changes the next-token distribution."
    ),
    new_code_cell(
        "model = models['llama']\n"
        "ids = tok('the cat sat on the mat', return_tensors='pt').input_ids\n"
        "n = ids.shape[1]\n"
        "with torch.no_grad():\n"
        "    base = torch.log_softmax(model(ids).logits[0, -1], -1)\n"
        "    influence = []\n"
        "    for k in range(n):\n"
        "        with attention_controls(model, key_weights(1, n, [[k]], 0.0)):\n"
        "            logp = torch.log_softmax(model(ids).logits[0, -1], -1)\n"
        "        influence.append(float((base.exp() * (base - logp)).sum()))\n"
        "import matplotlib\n"
        "matplotlib.use('Agg')\n"
        "import matplotlib.pyplot as plt\n"
        "fig, ax = plt.subplots(figsize=(8, 2.5))\n"
        "ax.bar(range(n), influence)\n"
        "ax.set_xticks(range(n), tok.convert_ids_to_tokens(ids[0].tolist()))\n"
        "ax.set_ylabel('KL when removed')\n"
        "plt.show()"
    ),
    new_code_cell(
        "# character spans -> key positions -> weights; multiplicative mode (AtMan's min-shift) on the last layer only\n"
        "text = 'the cat sat on the mat'\n"
        "enc = tok([text], return_offsets_mapping=True, return_tensors='pt')\n"
        "cat = spans_to_key_positions(enc.offset_mapping, [(4, 7)])[0]\n"
        "print('key positions of \"cat\":', cat.tolist(), tok.decode(enc.input_ids[0, cat]))\n"
        "w = key_weights(1, enc.input_ids.shape[1], [cat], 0.1)\n"
        "with torch.no_grad(), attention_controls(model, w, mode='multiplicative', layers=[-1]):\n"
        "    steered = model.generate(enc.input_ids, max_new_tokens=8, do_sample=False, pad_token_id=0)\n"
        "print(repr(tok.decode(steered[0, enc.input_ids.shape[1]:])))"
    ),
    new_markdown_cell("## 4. Hooks with a lifetime and per-row parameters\n\nRow 0 keeps its MLP output, row 1 has it zeroed; the model is restored on exit."),
    new_code_cell(
        "mlp = get_anatomy(model).mlp_outputs[0]\n"
        "ids2 = torch.tensor([[1, 40, 41, 42], [1, 40, 41, 42]])\n"
        "with torch.no_grad():\n"
        "    plain = model(ids2).logits\n"
        "    with forward_hooks({mlp: lambda m, a, out, p: out * rows(p, out)}, params=torch.tensor([1.0, 0.0])):\n"
        "        hooked = model(ids2).logits\n"
        "    after = model(ids2).logits\n"
        "print('row 0 unchanged:', torch.equal(hooked[0], plain[0]), '| row 1 changed:', not torch.allclose(hooked[1], plain[1]),\n"
        "      '| restored:', torch.equal(after, plain))"
    ),
    new_markdown_cell("## 5. Teacher-forced scoring\n\nOne forward gives log p(continuation token t) at logit index `prompt_len - 1 + t`; ragged inputs are padded for you."),
    new_code_cell(
        "prompts = [tok('the cat').input_ids, tok('a').input_ids]\n"
        "conts = [tok(' sat', add_special_tokens=False).input_ids, tok(' dog ran', add_special_tokens=False).input_ids]\n"
        "scores = teacher_forced_logprobs(model, prompts, conts)\n"
        "print(scores.logprobs)\n"
        "print('sequence log-probs:', scores.sequence_logprob())"
    ),
]
