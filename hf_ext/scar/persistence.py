"""Saving, loading and publishing SCAR adapters: huggingface_hub's ``ModelHubMixin`` over the adapter's own files.

An adapter folder holds ``config.json`` (a :class:`~hf_ext.scar.configuration_scar.ScarConfig` naming the base
model), ``adapter_model.safetensors`` (the four SAE tensors, never the base weights) and a ``README.md`` model card
rendered from ``model_cards/scar.md.j2``. :class:`ScarHubMixin` implements the mixin's ``_save_pretrained`` /
``_from_pretrained`` hooks for that layout, so ``from_pretrained`` takes a folder or a Hub id (with ``revision``,
``token``, ``cache_dir`` …) and ``push_to_hub`` uploads through a temporary folder, as for any mixin model.
:func:`load_base_model` loads the base causal LM an adapter config names, with public loading options only.

Example:
    >>> from hf_ext.scar import ScarAdapter
    >>> from hf_ext.testing import tiny_causal_lm
    >>> import tempfile
    >>> scar = ScarAdapter.for_model(tiny_causal_lm("gpt2"), layer=0, concepts=["toxicity"])
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     _ = scar.save_pretrained(tmp, card=False)
    ...     sorted(p.name for p in Path(tmp).iterdir())
    ['adapter_model.safetensors', 'config.json', 'hf_ext_manifest.json']
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

import torch
from huggingface_hub import ModelHubMixin
from torch import nn

from hf_ext.utils.loading import ArtifactError, load_safetensors, read_json
from hf_ext.utils.logging import get_logger
from hf_ext.utils.saving import MANIFEST_NAME, atomic_directory, verify_manifest

from .configuration_scar import ScarConfig

if TYPE_CHECKING:
    from huggingface_hub import ModelCard

logger = get_logger(__name__)

__all__ = ["ADAPTER_WEIGHTS_NAME", "CONFIG_NAME", "DOWNLOAD_OPTIONS", "ScarHubMixin", "load_base_model"]

#: File name of the adapter weights (safetensors) next to ``config.json``.
ADAPTER_WEIGHTS_NAME = "adapter_model.safetensors"
CONFIG_NAME = "config.json"
#: The download options :meth:`ScarHubMixin.from_pretrained` takes for a Hub id.
DOWNLOAD_OPTIONS = ("token", "cache_dir", "local_files_only", "force_download")


class ScarHubMixin(ModelHubMixin, library_name="hf_ext", tags=["scar", "sparse-autoencoder", "steering", "hf_ext"]):
    """Hub I/O of an ``nn.Module`` with a ``ScarConfig`` in ``self.config`` (see the module doc).

    The saved format is the adapter's own (``config.json`` is the ``ScarConfig``, not the mixin's ``__init__``
    arguments), so folders written before this mixin load unchanged.
    """

    config: ScarConfig

    # --------------------------------------------------------------------------------------------- the mixin's hooks
    def _save_pretrained(self, save_directory: Path) -> None:
        from safetensors.torch import save_file

        self.config.save_pretrained(save_directory)
        tensors = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        save_file(tensors, str(Path(save_directory) / ADAPTER_WEIGHTS_NAME), metadata={"format": "pt", "hf_ext": "scar"})

    @classmethod
    def _from_pretrained(cls, *, model_id: str, revision: str | None, cache_dir: str | Path | None,
                         force_download: bool, local_files_only: bool, token: str | bool | None,
                         config: Any = None, model: nn.Module | None = None, device: str | torch.device | None = None,
                         dtype: torch.dtype | None = None, **unused: Any):
        folder = Path(model_id)
        if not folder.is_dir():
            from huggingface_hub import snapshot_download

            folder = Path(snapshot_download(model_id, revision=revision, cache_dir=cache_dir, token=token,
                                            force_download=force_download, local_files_only=local_files_only,
                                            allow_patterns=[CONFIG_NAME, ADAPTER_WEIGHTS_NAME, "README.md",
                                                            MANIFEST_NAME]))
        verify_manifest(folder)  # an interrupted save is an error, never a mix of two adapters
        if not (folder / ADAPTER_WEIGHTS_NAME).is_file():
            raise FileNotFoundError(f"{folder} has no {ADAPTER_WEIGHTS_NAME}; save an adapter with "
                                    f"{cls.__name__}.save_pretrained first")
        config_path = folder / CONFIG_NAME
        raw = read_json(config_path, what="the SCAR adapter config", required=("model_type",))
        if raw["model_type"] != "scar":
            raise ArtifactError(f"{config_path} has model_type {raw['model_type']!r}, not 'scar'")
        # the validated config (every required key present), not the mixin's plain dict
        scar_config = ScarConfig.from_dict(raw, _config_path=config_path)
        adapter = cls(scar_config)
        state = load_safetensors(folder / ADAPTER_WEIGHTS_NAME, what="the SCAR adapter weights")
        try:
            adapter.load_state_dict(state, strict=True)
        except RuntimeError as err:  # missing / unexpected / mis-shaped tensors
            raise ArtifactError(f"{folder / ADAPTER_WEIGHTS_NAME} does not match {config_path}: {err}") from err
        if device is not None or dtype is not None:
            adapter.to(device=device, dtype=dtype)
        if model is not None:
            adapter.attach(model)
        return adapter

    def generate_model_card(self, *args: Any, **context: Any) -> ModelCard:
        """The mixin's card hook: :meth:`model_card`."""
        return self.model_card(**context)

    # --------------------------------------------------------------------------------------------- public API
    def save_pretrained(self, save_directory: str | os.PathLike, *, card: bool = True, config: Any = None,
                        model_card_kwargs: dict[str, Any] | None = None, **card_context: Any) -> Path:
        """Write ``config.json`` (naming the base model) and ``adapter_model.safetensors``; never the base weights.

        Args:
            save_directory: folder (created). Written atomically (:func:`hf_ext.utils.saving.atomic_directory`):
                an interrupted save leaves the previous adapter; other files in the folder are left alone.
            card: also write a ``README.md`` model card (``model_cards/scar.md.j2``) with ``base_model``; an
                existing one is replaced.
            config: must be ``None`` (the adapter saves its own ``ScarConfig``; the mixin's ``push_to_hub`` passes it).
            model_card_kwargs, **card_context: template variables (``description``, ``evaluation_details``,
                ``repo_id`` …).

        Returns:
            The folder.
        """
        if config is not None:
            raise TypeError(f"{type(self).__name__}.save_pretrained saves its own ScarConfig; got config={config!r}")
        path = Path(save_directory).expanduser()
        with atomic_directory(path) as staging:  # written aside, then renamed in: never half A, half B
            if not card:
                self._save_pretrained(staging)
            else:  # a fresh staging folder, so the mixin renders the card afresh
                super().save_pretrained(staging, model_card_kwargs={**(model_card_kwargs or {}), **card_context})
        return path

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, model: nn.Module | None = None, *,
                        revision: str | None = None, device: str | torch.device | None = None,
                        dtype: torch.dtype | None = None, **hub_kwargs: Any) -> Self:
        """Load an adapter saved by :meth:`save_pretrained` (a local folder or a Hub repo id).

        Args:
            pretrained_model_name_or_path: folder or Hub id.
            model: if given, the adapter is attached to it (base-model mismatch raises ``ValueError``).
            revision: Hub revision.
            device, dtype: where / in which dtype to put the adapter (default: CPU, fp32; attaching moves it to the
                site's device).
            **hub_kwargs: download options for a Hub id (:data:`DOWNLOAD_OPTIONS`: ``token``, ``cache_dir``,
                ``local_files_only``, ``force_download``).

        Raises:
            FileNotFoundError: no adapter weights in the folder.
            TypeError: another keyword argument.
            ValueError: a config of another model type, or a base model that does not match.
        """
        unknown = sorted(k for k, v in hub_kwargs.items() if v is not None and k not in DOWNLOAD_OPTIONS)
        if unknown:
            raise TypeError(f"{cls.__name__}.from_pretrained got unsupported download options {unknown}; "
                            f"accepted: {list(DOWNLOAD_OPTIONS)}")
        hub_kwargs = {k: v for k, v in hub_kwargs.items() if v is not None}
        if Path(pretrained_model_name_or_path).is_dir():  # the mixin parses config.json first: a clear error before
            read_json(Path(pretrained_model_name_or_path) / CONFIG_NAME, what="the SCAR adapter config")
        return super().from_pretrained(pretrained_model_name_or_path, revision=revision, model=model, device=device,
                                       dtype=dtype, **hub_kwargs)

    @classmethod
    def from_reference_checkpoint(cls, source: str | os.PathLike | Mapping[str, torch.Tensor], model: nn.Module | None = None, *,
                                  dtype: torch.dtype | None = torch.float32, **kwargs: Any) -> Self:
        """The SAE of a released SCAR checkpoint (ml-research/SCAR ``LLama3_SAE``: path, Hub id or state dict).

        Args:
            source: folder, ``.safetensors``/``.bin`` file, Hub id or state dict
                (:func:`hf_ext.scar.reference_checkpoint.read_reference_checkpoint`).
            model: the base causal LM to attach to (its hidden size and layer count must match).
            dtype: dtype of the adapter (the release stores float16; default float32).
            **kwargs: ``layer``, ``k``, ``site``, ``concepts``, ``revision`` and other config fields
                (:func:`hf_ext.scar.reference_checkpoint.reference_config_and_state`).

        Raises:
            ValueError: see :func:`~hf_ext.scar.reference_checkpoint.reference_config_and_state`; a base model that does
                not match.
        """
        from .reference_checkpoint import reference_config_and_state

        config, state = reference_config_and_state(source, **kwargs)
        adapter = cls(config)
        adapter.load_state_dict({name: t.to(adapter.encoder.weight.dtype) for name, t in state.items()}, strict=True)
        if dtype is not None:
            adapter.to(dtype)
        if model is not None:
            adapter.attach(model)
        logger.info("loaded reference SCAR SAE: %d latents over %d inputs, k=%d, layer %d (%s)", config.n_latents,
                    config.n_inputs, config.k, config.layer, config.site)
        return adapter

    def push_to_hub(self, repo_id: str, *, private: bool | None = None, token: str | None = None,
                    commit_message: str = "Upload SCAR adapter", **card_context: Any) -> str:
        """Upload the adapter files and model card (never the base model) to the Hub; returns the commit URL."""
        info = super().push_to_hub(repo_id, private=private, token=token, commit_message=commit_message,
                                   model_card_kwargs=card_context)
        return str(info)

    def model_card(self, **context: Any) -> ModelCard:
        """The Hub model card (``huggingface_hub.ModelCard``) of this adapter; ``base_model`` in its front matter.

        ``model_name``, ``eval_results`` (dicts of ``huggingface_hub.EvalResult`` fields: the ``model-index``) and
        ``datasets`` go into the front matter; other keys are template variables.
        """
        from ..hub import render_model_card

        cfg = self.config
        data: dict[str, Any] = {"license": context.pop("license", "apache-2.0"),
                                "tags": ["scar", "sparse-autoencoder", "steering", "hf_ext"]}
        for key in ("model_name", "eval_results", "datasets"):  # eval_results (+ model_name) become the model-index
            if key in context:
                data[key] = context.pop(key)
        if cfg.base_model_name_or_path and not os.path.isdir(str(cfg.base_model_name_or_path)):
            data["base_model"] = cfg.base_model_name_or_path
        return render_model_card("scar", card_data=data, config=cfg.to_dict(), concepts=cfg.concepts,
                                 base_model_name=cfg.base_model_name_or_path, **context)


def load_base_model(config: ScarConfig, *model_args: Any, revision: str | None = None, **kwargs: Any) -> nn.Module:
    """The base causal LM named in an adapter's ``config``, loaded through its own class with public options only.

    ``AutoModelForCausalLM`` resolves the base's class from the base's own config; what an Auto class passed about
    the *adapter* folder (``_from_auto``, ``config``, ``adapter_kwargs`` …) is dropped by
    :func:`hf_ext.compat.split_loading_kwargs`, so it cannot clash with the nested load.

    Args:
        config: the adapter's :class:`~hf_ext.scar.configuration_scar.ScarConfig` (``base_model_name_or_path``).
        *model_args: positional arguments of the base's ``from_pretrained``.
        revision: the base repo's revision (default: ``config.base_model_revision``).
        **kwargs: download options and public loading options (``dtype``, ``device_map``, ``attn_implementation`` …).

    Example:
        >>> base = load_base_model(ScarConfig(base_model_name_or_path="org/base"))  # downloads it  # doctest: +SKIP
    """
    from transformers import AutoModelForCausalLM

    from ..compat import split_loading_kwargs

    hub, model_kwargs, _ = split_loading_kwargs(kwargs)
    return AutoModelForCausalLM.from_pretrained(config.base_model_name_or_path, *model_args,
                                                revision=revision or config.base_model_revision,
                                                **hub, **model_kwargs)
