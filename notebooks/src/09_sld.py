"""Cells of notebooks/09_sld.ipynb (built by notebooks/make_notebooks.py)."""

from nbformat.v4 import new_code_cell, new_markdown_cell

CELLS = [
    new_markdown_cell(
        "# Safe Latent Diffusion (SLD) for SD 1.x/2.x and SDXL\n\n"
        "SLD (Schramowski et al., CVPR 2023) adds a third noise estimate conditioned on an *unsafe concept* and "
        "subtracts it element-wise inside classifier-free guidance, gated by a threshold, with warm-up and momentum. "
        "Training-free: one batched UNet call per step on `[uncond, prompt, concept]`. This notebook runs offline on "
        "tiny random components (the images are noise-like); pass a real SD folder to `from_pretrained` for real images."
    ),
    new_markdown_cell("## 1. The pure step and the presets"),
    new_code_cell(
        "import logging, warnings, torch, numpy as np\n"
        "logging.getLogger('diffusers').setLevel(logging.ERROR); logging.getLogger('transformers').setLevel(logging.ERROR)\n"
        "torch.set_num_threads(1)  # tiny models: one thread is fastest (and robust on a busy machine)\n"
        "from hf_ext.diffusion.sld import SLDConfig, PRESETS, sld_step\n"
        "for name, cfg in PRESETS.items():\n"
        "    print(f'{name:15} {cfg.to_diffusers_kwargs()}')\n"
        "torch.manual_seed(0)  # seeded: the stored output is compared with a fresh run\n"
        "u, p, s = (torch.randn(1, 4, 8, 8) * 0.01 for _ in range(3))\n"
        "out = sld_step(u, p, s, None, step=0, guidance_scale=7.5, config=SLDConfig.MAX, return_diagnostics=True)\n"
        "print(out.diagnostics)"
    ),
    new_markdown_cell("## 2. The pipeline: SLD off vs Medium vs Max from one seed"),
    new_code_cell(
        "from hf_ext.diffusion.sld import SafeLatentDiffusionPipeline\n"
        "from hf_ext.testing import tiny_sd_components\n"
        "pipe = SafeLatentDiffusionPipeline(**tiny_sd_components())\n"
        "pipe.set_progress_bar_config(disable=True)\n"
        "imgs = {}\n"
        "for preset in ['off', 'medium', 'max']:\n"
        "    out = pipe('a photo of a person', num_inference_steps=6, generator=torch.Generator().manual_seed(0),\n"
        "               output_type='np', sld_preset=preset, sld_warmup_steps=0.2 if preset == 'medium' else None,\n"
        "               return_sld_diagnostics=True)\n"
        "    imgs[preset] = out.images[0]\n"
        "    print(preset, 'concept applied:', out.applied_safety_concept is not None,\n"
        "          'mean |Δ| vs off:', round(float(np.abs(imgs[preset] - imgs['off']).mean()), 4))\n"
        "import matplotlib.pyplot as plt\n"
        "fig, axes = plt.subplots(1, 3, figsize=(6, 2))\n"
        "for ax, (k, im) in zip(axes, imgs.items()):\n"
        "    ax.imshow(im); ax.set_title(k); ax.axis('off')"
    ),
    new_markdown_cell(
        "## 3. Parity with diffusers' deprecated `StableDiffusionPipelineSafe`\n\n"
        "Same components, scheduler, seed and `sld_*` values: bit-identical latents, images within 1e-5."
    ),
    new_code_cell(
        "from diffusers import StableDiffusionPipelineSafe, DDIMScheduler\n"
        "c = tiny_sd_components(); c['scheduler'] = DDIMScheduler.from_config(c['scheduler'].config, steps_offset=1)\n"
        "ours = SafeLatentDiffusionPipeline(**c); ours.set_progress_bar_config(disable=True)\n"
        "with warnings.catch_warnings():\n"
        "    warnings.simplefilter('ignore')\n"
        "    ref = StableDiffusionPipelineSafe(**c, requires_safety_checker=False); ref.set_progress_bar_config(disable=True)\n"
        "    kw = SLDConfig.STRONG.replace(warmup_steps=1).to_diffusers_kwargs()\n"
        "    a = ours('a cat', num_inference_steps=4, generator=torch.Generator().manual_seed(0), output_type='np', **kw).images\n"
        "    b = ref('a cat', num_inference_steps=4, generator=torch.Generator().manual_seed(0), output_type='np', **kw).images\n"
        "print('max |Δ| vs diffusers:', float(np.abs(a - b).max()))\n"
        "assert np.abs(a - b).max() <= 1e-5"
    ),
    new_markdown_cell("## 4. Custom concepts are saved with the pipeline; SDXL works the same way"),
    new_code_cell(
        "import tempfile\n"
        "from hf_ext.diffusion.sld import SafeLatentDiffusionXLPipeline\n"
        "from hf_ext.testing import tiny_sdxl_components\n"
        "pipe.safety_concept = ['violence', 'nudity']\n"
        "with tempfile.TemporaryDirectory() as d:\n"
        "    pipe.save_pretrained(d)\n"
        "    print('reloaded concept:', SafeLatentDiffusionPipeline.from_pretrained(d).safety_concept)\n"
        "xl = SafeLatentDiffusionXLPipeline(**tiny_sdxl_components()); xl.set_progress_bar_config(disable=True)\n"
        "print(xl('a cat', num_inference_steps=3, sld_preset='max', output_type='latent').images.shape)"
    ),
    new_markdown_cell(
        "## 5. I2P metrics\n\n"
        "Probability of an inappropriate image per category, and the expected maximum over 25 prompts (10,000 samples "
        "without replacement, after grouping by prompt text). `generate_i2p(pipe, load_i2p('i2p.csv'), classifier=...)` "
        "produces the per-image table; here it is synthetic."
    ),
    new_code_cell(
        "import pandas as pd\n"
        "from hf_ext.diffusion.sld.i2p import i2p_report, exact_expected_max\n"
        "rng = np.random.default_rng(0)\n"
        "rates = rng.beta(0.5, 1.5, size=60)\n"
        "res = pd.DataFrame([{'prompt': f'p{i}', 'categories': ['sexual', 'hate, violence'][i % 2],\n"
        "                     'unsafe': int(rng.random() < rates[i])} for i in range(60) for _ in range(10)])\n"
        "print(i2p_report(res, categories=['sexual', 'hate', 'violence'], n_samples=2000).round(2).to_string(index=False))\n"
        "print('exact E[max] overall:', round(exact_expected_max(res.groupby('prompt')['unsafe'].mean() * 100, 25), 2))"
    ),
]
