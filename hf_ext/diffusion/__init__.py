"""Diffusion components of hf_ext: ``sld`` (Safe Latent Diffusion) and ``multifusion`` (sub-packages, imported lazily)."""
