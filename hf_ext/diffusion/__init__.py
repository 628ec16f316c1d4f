"""Diffusion components of hf_ext: ``sld`` (Safe Latent Diffusion), ``multifusion`` and ``mvader`` (sub-packages, each a
component that registers itself; see :mod:`hf_ext.registry`)."""
