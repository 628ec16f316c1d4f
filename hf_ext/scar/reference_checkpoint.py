"""The released SCAR checkpoint (ml-research/SCAR, Hub ``AIML-TUDA/SCAR``) as a :class:`ScarAdapter`.

The release is a whole ``LLama3_SAE`` model: the base Llama-3-8B (``model.*``, ``lm_head.weight``) plus the sparse
autoencoder under the ``SAE.`` prefix. Facts taken from the reference source (``llama3_SAE/modeling_llama3_SAE.py``,
``ConversionScript.py``, ``SAE_config/llama3-l24576-b25-k2048.json``):

======================== ============================ ============================================================
key                      shape                        role
======================== ============================ ============================================================
``SAE.encoder.weight``   ``[n_latents, n_inputs]``    ``W_enc`` (``Linear(n_inputs, n_latents, bias=False)``)
``SAE.decoder.weight``   ``[n_inputs, n_latents]``    ``W_dec``: its own parameter (``tied=True`` only copies
                                                      ``W_encᵀ`` at initialisation)
``SAE.pre_bias``         ``[n_inputs]``               ``b_pre``, subtracted before encoding, added after decoding
``SAE.latent_bias``      ``[n_latents]``              ``b_lat``
``SAE.threshold``        ``[n_latents]``              JumpReLU variants only (not supported here)
======================== ============================ ============================================================

* Placement: a forward hook on ``model.layers[hook_block_num].mlp`` (``site="mlp"``: the MLP output before the
  residual add); the release uses block 25 of 32 (the config name's ``b25``).
* Sizes: ``n_inputs = 4096``, ``n_latents = 6 · 4096 = 24576`` (``factor`` 6), TopK with ``k = activation_k = 2048``
  followed by a ReLU.
* ``normalize=True`` is hard-coded in ``LLama3_SAE.__init__`` whatever the config's ``normalize`` field says: per token
  ``x̃ = (x − mean) / (std + 1e-5)`` (unbiased std) and ``x̂ = (W_dec h + b_pre) · std + mean``.
* Latent 0 is the conditioned one (``SCAR.hook.mod_features = 0``). Steering (``mod_scaling = α``) multiplies the
  positive values of latent 0 by ``α`` (``mod_replacement = r`` sets it to ``r``) and the MLP output is *replaced*
  by the decoded reconstruction — :meth:`ScarAdapter.steer` with ``op="scale"`` / ``"replace"`` and
  ``output="replace"``.

Example:
    >>> from hf_ext.scar import ScarAdapter
    >>> scar = ScarAdapter.from_reference_checkpoint("AIML-TUDA/SCAR", model=llama3_8b,  # doctest: +SKIP
    ...                                              concepts=["toxicity"])  # Hub download: SAE shard only
    >>> with scar.steer({"toxicity": -100.0}):  # needs the 8B reference checkpoint  # doctest: +SKIP
    ...     out = llama3_8b.generate(**inputs, max_new_tokens=32)
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from hf_ext.utils.logging import get_logger

if TYPE_CHECKING:
    from .configuration_scar import ScarConfig

logger = get_logger(__name__)

__all__ = ["REFERENCE_SAE_KEYS", "load_reference_sae_state_dict", "read_reference_checkpoint",
           "reference_config_and_state"]

#: SAE parameter names inside the reference model (after the ``SAE.`` prefix), as :class:`ScarAdapter` names them.
REFERENCE_SAE_KEYS: tuple[str, ...] = ("encoder.weight", "decoder.weight", "pre_bias", "latent_bias")
_PREFIX = "SAE."
_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
_SINGLE = ("model.safetensors", "pytorch_model.bin")


def load_reference_sae_state_dict(state: Mapping[str, torch.Tensor], prefix: str | None = None) -> dict[str, torch.Tensor]:
    """The SAE tensors of a reference state dict, under :class:`ScarAdapter` names.

    Args:
        state: the full ``LLama3_SAE`` state dict (keys ``SAE.encoder.weight`` …), a bare ``Autoencoder`` state dict
            (``encoder.weight`` …), or the reference trainer's checkpoint ``{"models_state_dict": [sae_state]}``.
        prefix: the SAE prefix (default: ``"SAE."`` if present, else none).

    Raises:
        ValueError: the SAE keys are missing, or the checkpoint has a JumpReLU ``threshold`` (not supported).

    Example:
        >>> sd = {"SAE.encoder.weight": torch.zeros(4, 2), "SAE.decoder.weight": torch.zeros(2, 4),
        ...       "SAE.pre_bias": torch.zeros(2), "SAE.latent_bias": torch.zeros(4), "lm_head.weight": torch.zeros(3, 2)}
        >>> sorted(load_reference_sae_state_dict(sd))
        ['decoder.weight', 'encoder.weight', 'latent_bias', 'pre_bias']
    """
    if not isinstance(state, Mapping):
        raise TypeError(f"state must be a mapping of tensors, got {type(state).__name__}")
    if "models_state_dict" in state:  # the reference trainer's checkpoint (ConversionScript reads models_state_dict[0])
        state = state["models_state_dict"][0]
    if prefix is None:
        prefix = _PREFIX if any(k.startswith(_PREFIX) for k in state) else ""
    if prefix + "threshold" in state:
        raise ValueError("this SCAR checkpoint has a JumpReLU threshold (SAE.threshold); hf_ext's ScarAdapter "
                         "implements the released TopK + ReLU SAE only")
    missing = [prefix + k for k in REFERENCE_SAE_KEYS if prefix + k not in state]
    if missing:
        some = sorted(state)[:6]
        raise ValueError(f"no SCAR SAE in this state dict: missing {missing} (keys start with {some}); expected the "
                         "reference LLama3_SAE layout with SAE.encoder.weight, SAE.decoder.weight, SAE.pre_bias, "
                         "SAE.latent_bias")
    return {k: state[prefix + k] for k in REFERENCE_SAE_KEYS}


def _read_keys(path: Path, keys: Sequence[str] | None) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors / torch file (only ``keys`` when given; a safetensors file reads nothing else)."""
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            names = list(f.keys())
            if keys is None and any(n.startswith(_PREFIX) for n in names):
                keys = _sae_keys()
            return {n: f.get_tensor(n) for n in names if keys is None or n in keys}
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:  # legacy (non-zip) files cannot be memory-mapped
        state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, Mapping):
        raise ValueError(f"{path} holds a {type(state).__name__}, not a state dict")
    return dict(state) if keys is None else {k: state[k] for k in keys if k in state}


def _sae_keys(prefix: str = _PREFIX) -> list[str]:
    return [prefix + k for k in REFERENCE_SAE_KEYS] + [prefix + "threshold"]


def _from_folder(folder: Path) -> dict[str, torch.Tensor]:
    wanted = _sae_keys()
    for index in _INDEXES:
        if (folder / index).is_file():
            weight_map = json.loads((folder / index).read_text())["weight_map"]
            shards = sorted({weight_map[k] for k in wanted if k in weight_map})
            if not shards:
                raise ValueError(f"{folder / index} lists no SAE.* tensors; is this a SCAR (LLama3_SAE) checkpoint?")
            out: dict[str, torch.Tensor] = {}
            for shard in shards:  # only the shards that hold the SAE: never the 16 GB of Llama weights
                out.update(_read_keys(folder / shard, wanted))
            return out
    for single in _SINGLE:
        if (folder / single).is_file():
            return _read_keys(folder / single, wanted)
    raise FileNotFoundError(f"{folder} holds none of {_INDEXES + _SINGLE}; pass the SCAR checkpoint folder, a weights "
                            "file or a state dict")


def _download(repo_id: str, revision: str | None) -> Path:
    """Fetch config.json, the weight index and only the shard(s) with the SAE tensors from the Hub."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    def get(name: str) -> Path:
        return Path(hf_hub_download(repo_id, name, revision=revision))

    config = get("config.json")
    for index in _INDEXES:
        try:
            index_path = get(index)
        except EntryNotFoundError:
            continue
        weight_map = json.loads(index_path.read_text())["weight_map"]
        for shard in sorted({weight_map[k] for k in _sae_keys() if k in weight_map}):
            get(shard)
        return config.parent
    for single in _SINGLE:
        try:
            get(single)
            return config.parent
        except EntryNotFoundError:
            continue
    raise FileNotFoundError(f"Hub repo {repo_id!r} (revision {revision!r}) has no model weights")


def read_reference_checkpoint(source: str | os.PathLike | Mapping[str, torch.Tensor], *, revision: str | None = None
                              ) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    """The SAE tensors (:class:`ScarAdapter` names) and the reference ``config.json`` (or ``None``) of ``source``.

    Args:
        source: a state dict (full model, bare SAE or trainer checkpoint); a checkpoint folder (``config.json`` plus
            ``model.safetensors[.index.json]`` or ``pytorch_model.bin[.index.json]``: only the shards holding
            ``SAE.*`` are read); a single weights file; or a Hub repo id (only those shards are downloaded).
        revision: Hub revision (the release keeps one SAE per revision).

    Raises:
        FileNotFoundError: no weights at ``source``; ValueError: no SAE tensors in them.
    """
    if isinstance(source, Mapping):
        return load_reference_sae_state_dict(source), None
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"source must be a path, a Hub repo id or a state dict, got {type(source).__name__}")
    path = Path(source)
    if path.is_file():
        config_path = path.parent / "config.json"
        state = _read_keys(path, None)
    elif path.is_dir():
        config_path = path / "config.json"
        state = _from_folder(path)
    elif isinstance(source, str) and source.count("/") == 1 and not source.startswith((".", "/")):
        path = _download(source, revision)
        config_path = path / "config.json"
        state = _from_folder(path)
    else:
        raise FileNotFoundError(f"SCAR checkpoint not found: {source!r} is neither a file, a folder nor a Hub repo id")
    config = json.loads(config_path.read_text()) if config_path.is_file() else None
    return load_reference_sae_state_dict(state), config


def reference_config_and_state(source: str | os.PathLike | Mapping[str, torch.Tensor], *, layer: int | None = None,
                               k: int | None = None, site: str | None = None, concepts: Sequence[str] | None = None,
                               revision: str | None = None, **config_kwargs: Any,
                               ) -> tuple[ScarConfig, dict[str, torch.Tensor]]:
    """The :class:`ScarConfig` and adapter state dict of a reference SCAR checkpoint's SAE.

    :meth:`ScarAdapter.from_reference_checkpoint <hf_ext.scar.ScarAdapter.from_reference_checkpoint>` (and
    :func:`hf_ext.scar.load_reference_checkpoint`) build the adapter from them. The placement and TopK come from the
    checkpoint's ``config.json`` (``hook_block_num``, ``site``, ``activation_k``, ``activation``); arguments override
    it and are required where the checkpoint has no config. ``n_inputs`` and ``n_latents`` come from the tensor
    shapes. ``normalize=True`` always (the reference hard-codes it) and the steering output is ``"replace"`` (the
    reference replaces the MLP output with the reconstruction).

    Args:
        source: see :func:`read_reference_checkpoint`.
        layer: decoder layer of the hook (default: ``hook_block_num``).
        k: TopK (default: ``activation_k``).
        site: ``"mlp"`` (reference default) or ``"block"`` (default: the config's ``site``).
        concepts: names of the conditioned latents, from latent 0 (the release conditions latent 0 on toxicity:
            pass ``["toxicity"]``; default ``["concept"]``).
        revision: Hub revision.
        **config_kwargs: other :class:`ScarConfig` fields.

    Returns:
        ``(config, state)``: a :class:`ScarConfig` and the SAE tensors under :class:`ScarAdapter` names.

    Raises:
        ValueError: missing ``layer``/``k`` without a config, an activation other than TopK, shapes that disagree with
        the config or with each other.
    """
    from .configuration_scar import ScarConfig

    sae, ref = read_reference_checkpoint(source, revision=revision)
    ref = ref or {}
    activation = ref.get("activation", "topk")
    if activation != "topk":
        raise ValueError(f"the checkpoint's activation is {activation!r}; hf_ext's ScarAdapter implements the released "
                         "'topk' (TopK + ReLU) SAE only")
    n_latents, n_inputs = sae["encoder.weight"].shape
    expected = {"decoder.weight": (n_inputs, n_latents), "pre_bias": (n_inputs,), "latent_bias": (n_latents,)}
    for name, shape in expected.items():
        if tuple(sae[name].shape) != shape:
            raise ValueError(f"SAE.{name} has shape {tuple(sae[name].shape)} but SAE.encoder.weight "
                             f"[{n_latents}, {n_inputs}] implies {shape}")
    for field, value in (("n_latents", n_latents), ("n_inputs", n_inputs)):
        if field in ref and int(ref[field]) != value:
            raise ValueError(f"config.json says {field}={ref[field]} but the SAE tensors have {value}; the config is "
                             "stale (the reference repo's own config.json predates its conversion script)")
    layer = layer if layer is not None else ref.get("hook_block_num")
    k = k if k is not None else ref.get("activation_k")
    for name, value in (("layer", layer), ("k", k)):
        if value is None:
            raise ValueError(f"{name}= is required: the checkpoint has no config.json naming it (the release: layer=25, "
                             "k=2048)")
    base = {}
    if ref:
        base = dict(base_model_name_or_path=ref.get("base_model_name") or None, base_model_type="llama",
                    base_hidden_size=ref.get("hidden_size"), base_num_layers=ref.get("num_hidden_layers"))
    config = ScarConfig(n_inputs=int(n_inputs), n_latents=int(n_latents), k=int(k), layer=int(layer),
                        site=site or ref.get("site", "mlp"), concepts=list(concepts) if concepts else None,
                        normalize=True, eps=1e-5, steering_output="replace", **{**base, **config_kwargs})
    return config, sae
