"""Cells of notebooks/10_multifusion.ipynb (built by notebooks/make_notebooks.py)."""

from nbformat.v4 import new_code_cell, new_markdown_cell

CELLS = [
    new_markdown_cell(
        "# MultiFusion and M-VADER: images from interleaved multilingual text and images\n\n"
        "MultiFusion (NeurIPS 2023) and M-VADER (2022) swap Stable Diffusion's CLIP text encoder for a multimodal decoder: "
        "the prompt is a list of `str` and `PIL.Image` items in any order, encoded as one causal sequence; the hidden states "
        "condition the UNet's cross-attention after a projection. Only the cross-attention and the projection are "
        "fusion-tuned. AtMan attention manipulation weights the items (text 20 : image 1). Everything here runs offline "
        "on tiny random models built in code."
    ),
    new_markdown_cell("## 1. The interleaved encoder\n\nA tiny Llava (VLM route) and a MAGMA-style encoder (any causal LM + "
                      "vision tower → Linear → LayerNorm prefix + bottleneck adapters)."),
    new_code_cell(
        "import torch\n"
        "from PIL import Image\n"
        "torch.set_num_threads(1)  # tiny models: one thread is fastest (threading overhead dominates)\n"
        "from hf_ext.diffusion.multifusion import InterleavedEncoder, MultiFusionPipeline, tiny_multifusion_components\n"
        "from hf_ext.diffusion.multifusion.tiny import tiny_magma_encoder, tiny_image_processor\n"
        "from hf_ext.diffusion.multifusion.training import draw_shape\n"
        "from hf_ext.testing import tiny_llava, tiny_tokenizer\n\n"
        "model, processor = tiny_llava()\n"
        "llava_enc = InterleavedEncoder(model, processor.tokenizer, processor.image_processor)\n"
        "cup = draw_shape('blue', 'circle')\n"
        "out = llava_enc([cup, 'a green apple'], weights=[1.0, 20.0])\n"
        "print(out.hidden_states.shape, out.item_kinds, out.item_spans)\n\n"
        "for family in ['llama', 'gpt2', 'gpt_neox', 'qwen2']:\n"
        "    enc = InterleavedEncoder(tiny_magma_encoder(family), tiny_tokenizer(), tiny_image_processor())\n"
        "    a = enc([cup, 'a green apple']).hidden_states\n"
        "    b = enc(['a green apple', cup]).hidden_states\n"
        "    ones = enc([cup, 'a green apple'], weights=[1, 1]).hidden_states\n"
        "    print(f'{family:9} order matters: {not torch.allclose(a, b)}   weights 1 == unweighted: {torch.equal(a, ones)}')"
    ),
    new_markdown_cell("## 2. The pipeline\n\nClassifier-free guidance whose negative branch can be text, an image or both; "
                      "`output_type` pil/np/latent; per-item weights in the encoder and optionally in the UNet."),
    new_code_cell(
        "pipe = MultiFusionPipeline(**tiny_multifusion_components())\n"
        "pipe.set_progress_bar_config(disable=True)\n"
        "images = []\n"
        "for kwargs in [dict(prompt=['a red square']),\n"
        "               dict(prompt=[cup, 'a red square']),\n"
        "               dict(prompt=[cup, 'a red square'], weights=[1.0, 20.0], cross_attention_weighting=True),\n"
        "               dict(prompt=['a red square'], negative_prompt=cup)]:\n"
        "    images.append(pipe(**kwargs, num_inference_steps=4, generator=torch.Generator().manual_seed(0)).images[0])\n"
        "strip = Image.new('RGB', (32 * len(images), 32))\n"
        "for i, im in enumerate(images):\n"
        "    strip.paste(im, (32 * i, 0))\n"
        "strip.resize((strip.width * 4, 128), Image.NEAREST)"
    ),
    new_markdown_cell("## 3. Fusion tuning (stage B) on coloured shapes\n\nOnly `attn2` and the projection train; "
                      "each sample's noise, timestep, modality (caption or image) and CFG dropout are keyed on its index."),
    new_code_cell(
        "from hf_ext.diffusion.multifusion.training import FusionConfig, ShapesDataset, denoising_loss, train_fusion\n"
        "held = ShapesDataset(8, seed=99)\n"
        "before = denoising_loss(pipe, held, num_draws=2)\n"
        "res = train_fusion(pipe, ShapesDataset(64), FusionConfig(steps=8, batch_size=8, lr=1e-2), progress=False)\n"
        "after = denoising_loss(pipe, held, num_draws=2)\n"
        "print(f'held-out denoising loss {before:.4f} -> {after:.4f}; trained {len(res.trainable)} tensors')"
    ),
    new_markdown_cell("## 4. Stage A (S-MAGMA): bias-only contrastive tuning, and the multilingual check"),
    new_code_cell(
        "from hf_ext.diffusion.multifusion.evaluation import multilingual_similarity\n"
        "from hf_ext.diffusion.multifusion.training import SENTENCE_PAIRS, SemanticConfig, train_semantic\n"
        "enc = InterleavedEncoder(tiny_magma_encoder('gpt2'), tiny_tokenizer(), tiny_image_processor())\n"
        "print('before', {k: round(v, 3) for k, v in multilingual_similarity(enc).items()})\n"
        "r = train_semantic(enc, SENTENCE_PAIRS, SemanticConfig(steps=15, lr=1e-3), progress=False)\n"
        "print(f'InfoNCE {r.losses[0]:.3f} -> {r.losses[-1]:.3f} on {len(r.trainable)} bias tensors')\n"
        "print('after ', {k: round(v, 3) for k, v in multilingual_similarity(enc).items()})"
    ),
    new_markdown_cell("## 5. MCC-250-style evaluation with a pluggable scorer\n\nWith random weights the accuracy is "
                      "meaningless; plug in `ClipZeroShotScorer('path/to/clip')` and a trained pipeline for real numbers."),
    new_code_cell(
        "from hf_ext.diffusion.multifusion.evaluation import MCC_COLORS, evaluate_mcc, mcc_prompts\n\n"
        "def mean_colour_scorer(images, texts):  # toy scorer: closeness of the image's mean colour to the text's colour\n"
        "    out = torch.zeros(len(images), len(texts))\n"
        "    for i, im in enumerate(images):\n"
        "        mean = torch.tensor(im.resize((1, 1)).getpixel((0, 0)), dtype=torch.float)\n"
        "        for j, t in enumerate(texts):\n"
        "            out[i, j] = -(mean - torch.tensor(MCC_COLORS[t.split()[1]], dtype=torch.float)).norm()\n"
        "    return out\n\n"
        "prompts = mcc_prompts(3, seed=0)\n"
        "gen = lambda p: pipe(p, num_inference_steps=2, generator=torch.Generator().manual_seed(0)).images[0]\n"
        "res = evaluate_mcc(gen, mean_colour_scorer, prompts, progress=False)\n"
        "print({k: v for k, v in res.items() if not k.endswith('per_prompt')})"
    ),
    new_markdown_cell("## 6. M-VADER and save/load"),
    new_code_cell(
        "import tempfile\n"
        "from hf_ext.diffusion.mvader import MVaderPipeline\n"
        "mv = MVaderPipeline(**tiny_multifusion_components(encoder='magma', family='gpt2'))\n"
        "mv.set_progress_bar_config(disable=True)\n"
        "a = mv([cup, 'riding a horse'], num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type='latent').images\n"
        "with tempfile.TemporaryDirectory() as d:\n"
        "    mv.save_pretrained(d)\n"
        "    again = MVaderPipeline.from_pretrained(d)\n"
        "    again.set_progress_bar_config(disable=True)\n"
        "    b = again([cup, 'riding a horse'], num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type='latent').images\n"
        "print('identical latents after the round trip:', torch.equal(a, b))"
    ),
]
