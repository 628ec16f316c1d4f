"""User API of the MAD datasets: :func:`load_mad`, parquet/Hub export with a dataset card, and Zenodo import.

Example:
    >>> from hf_ext.mad import load_mad
    >>> dd = load_mad("in-context-recall", num_train_examples=64, num_test_examples=16)
    >>> dd["test"].with_format("numpy")[:]["targets"].shape
    (16, 127)
    >>> it = load_mad("selective-copying", split="train", streaming=True, mode="fast")
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hf_ext.utils.logging import get_logger

from .config import GENERATOR_VERSION, TASKS, MADTaskConfig, benchmark_grid, config_from_name

if TYPE_CHECKING:
    import datasets

logger = get_logger(__name__)

__all__ = ["export_parquet", "from_madlab_npy", "load_mad", "push_mad_to_hub", "render_dataset_card"]


def _resolve(name_or_task: str | MADTaskConfig, overrides: dict[str, Any]) -> tuple[str, MADTaskConfig]:
    if isinstance(name_or_task, MADTaskConfig):
        cfg = name_or_task.replace(**overrides) if overrides else name_or_task
        return cfg.name, cfg
    if not isinstance(name_or_task, str):
        raise TypeError(f"load_mad expects a task name, a grid config name or a MADTaskConfig, got "
                        f"{type(name_or_task).__name__}")
    cfg = config_from_name(name_or_task, **overrides)
    return name_or_task, cfg


def load_mad(name_or_task: str | MADTaskConfig = "in-context-recall", split: str | None = None,
             streaming: bool = False, cache_dir: str | None = None, num_proc: int | None = None,
             **overrides: Any,
             ) -> datasets.DatasetDict | datasets.Dataset | datasets.IterableDatasetDict | datasets.IterableDataset:
    """Load a MAD task as a ``datasets`` object, generating and caching it on first use.

    Args:
        name_or_task: a task (``"in-context-recall"``, shorthand ``"CR"``), one of the 66 grid names
            (``"CR_vs-64_sl-128_ntr-12800"``, see :func:`~hf_ext.mad.config.benchmark_grid`) or a
            :class:`~hf_ext.mad.config.MADTaskConfig`.
        split: ``"train"``, ``"test"`` or ``None`` (both).
        streaming: return an ``IterableDataset`` (generated on the fly, nothing cached).
        cache_dir: the datasets cache folder (default ``HF_DATASETS_CACHE``).
        num_proc: processes for ``fast``-mode generation.
        **overrides: mad-lab setting names (``vocab_size``, ``seq_len``, ``num_train_examples``,
            ``num_test_examples``, ``frac_noise``, ``noise_vocab_size``, ``num_tokens_to_copy``, ``k_motif_size``,
            ``v_motif_size``, ``multi_query``) plus ``seed`` and ``mode`` (``"madlab"`` default or ``"fast"``).
            Any override is a distinct cache entry.

    Returns:
        ``DatasetDict`` (split None), ``Dataset``, or with ``streaming`` an ``IterableDatasetDict``/``IterableDataset``.
        Columns ``input_ids`` and ``targets`` (int32 lists of one fixed length, ``-100`` = ignored; targets are
        already aligned to input positions: use :class:`~hf_ext.mad.collator.MADCollator`, not ``labels``).

    Raises:
        ValueError: unknown task/name/setting or impossible settings (the message names the constraint).

    Example:
        >>> ds = load_mad("memorization", split="train", num_train_examples=8)
        >>> ds.num_rows
        8
    """
    from .builder import MADBuilder

    config_name, cfg = _resolve(name_or_task, overrides)
    if split is not None and split not in ("train", "test"):
        raise ValueError(f"unknown split {split!r}; MAD has 'train' and 'test' (or None for both)")
    builder_kwargs = cfg.to_dict()
    builder_kwargs.pop("generator_version")
    base = MADBuilder.builder_configs.get(config_name)
    if base is not None:  # pass only what differs from the named config, so the cache id stays the plain name
        builder_kwargs = {k: v for k, v in builder_kwargs.items() if getattr(base, k) != v}
    else:
        config_name = cfg.task
        base = MADBuilder.builder_configs[config_name]
        builder_kwargs = {k: v for k, v in builder_kwargs.items() if getattr(base, k) != v}
    builder = MADBuilder(cache_dir=cache_dir, config_name=config_name, **builder_kwargs)
    if streaming:
        return builder.as_streaming_dataset(split=split)
    builder.download_and_prepare(num_proc=num_proc if cfg.mode == "fast" else None)
    return builder.as_dataset(split=split)


# ------------------------------------------------------------------------------------------------ Hub / parquet
def render_dataset_card(rows: list[dict[str, Any]], repo_id: str = "org/mad-synthetics",
                        pretty_name: str = "MAD synthetic tasks") -> str:
    """The dataset card (README.md) for exported configs, from ``model_cards/mad_dataset.md.j2``.

    Args:
        rows: one dict per config with ``name``, ``task``, ``madlab_path``, ``config`` (the dict),
            ``sha256`` (hash of train/test inputs/targets, int64 C order), ``num_train``, ``num_test``, ``length``.
    """
    import importlib.resources

    import jinja2
    import numpy as np

    root = importlib.resources.files("hf_ext.model_cards")
    template = jinja2.Template((root / "mad_dataset.md.j2").read_text(encoding="utf-8"), trim_blocks=True,
                               lstrip_blocks=True)
    return template.render(rows=rows, repo_id=repo_id, pretty_name=pretty_name, numpy_version=np.__version__,
                           generator_version=GENERATOR_VERSION, tasks=TASKS)


def export_parquet(out_dir: str | Path, configs: Iterable[MADTaskConfig] | None = None, repo_id: str = "org/mad-synthetics",
                   progress: bool = True) -> Path:
    """Write every config as ``<out>/<name>/{train,test}-00000-of-00001.parquet`` plus a dataset card ``README.md``.

    The card's YAML ``configs:`` maps each config name to its files, so after uploading the folder,
    ``datasets.load_dataset(repo_id, name)`` works without hf_ext. The card lists generator and numpy versions,
    each config's sha256 (train inputs ‖ train targets ‖ test inputs ‖ test targets as int64) and mad-lab folder.

    Args:
        out_dir: output folder (created).
        configs: default :func:`~hf_ext.mad.config.benchmark_grid` (the 66 settings; fuzzy recall at vocab 128 takes
            minutes in ``madlab`` mode).
        repo_id: the Hub id named in the card's loading example.
        progress: tqdm over configs.

    Returns:
        ``out_dir`` as a Path.

    Example:
        >>> from hf_ext.mad.config import baseline
        >>> export_parquet("mad_export", [baseline("M", num_train_examples=8, num_test_examples=4)])
        PosixPath('mad_export')
    """
    from hf_ext.utils.saving import atomic_directory

    target = Path(out_dir).expanduser()
    configs = list(benchmark_grid() if configs is None else configs)
    names = [c.name for c in configs]
    if len(set(names)) != len(names):
        raise ValueError(f"export_parquet: duplicate config names {sorted({n for n in names if names.count(n) > 1})}")
    with atomic_directory(target, prune=True) as out:  # an interrupted export leaves the previous one (see utils.saving)
        _write_export(out, configs, repo_id, progress)
    return target


def _write_export(out: Path, configs: list[MADTaskConfig], repo_id: str, progress: bool) -> None:
    import pyarrow.parquet as pq

    from hf_ext.utils.progress import progress_bar

    from .builder import to_arrow_table
    from .generators import arrays_sha256, generate_splits

    rows = []
    for cfg in progress_bar(configs, desc="MAD configs", enabled=progress):
        splits = generate_splits(cfg)
        (out / cfg.name).mkdir(exist_ok=True)
        for split, (x, y) in splits.items():
            pq.write_table(to_arrow_table(x, y), out / cfg.name / f"{split}-00000-of-00001.parquet")
        rows.append({"name": cfg.name, "task": cfg.task, "madlab_path": cfg.madlab_path, "config": cfg.to_dict(),
                     "sha256": arrays_sha256(*splits["train"], *splits["test"]), "num_train": cfg.num_train_examples,
                     "num_test": cfg.num_test_examples, "length": cfg.output_length})
    (out / "README.md").write_text(render_dataset_card(rows, repo_id=repo_id), encoding="utf-8")
    (out / "mad_configs.json").write_text(json.dumps(rows, indent=1), encoding="utf-8")


def push_mad_to_hub(repo_id: str, out_dir: str | Path, configs: Iterable[MADTaskConfig] | None = None,
                    private: bool = False, token: str | None = None) -> str:
    """Export (see :func:`export_parquet`) and upload the folder as a dataset repository; returns the repo URL."""
    from huggingface_hub import HfApi

    folder = export_parquet(out_dir, configs, repo_id=repo_id)
    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="dataset")
    return f"https://huggingface.co/datasets/{repo_id}"


def from_madlab_npy(path: str | os.PathLike) -> datasets.DatasetDict:
    """Load a mad-lab data folder (e.g. a Zenodo ``t-CR_...`` folder with ``{train,test}/{inputs,targets}.npy``).

    Returns:
        ``DatasetDict`` with the same columns as :func:`load_mad` (compare bytes with ``mode="madlab"`` output to check
        parity with the Zenodo data).

    Raises:
        FileNotFoundError: a split file is missing (the message names it).
    """
    import datasets
    import numpy as np

    path = Path(path)
    out = {}
    for split in ("train", "test"):
        arrs = {}
        for name in ("inputs", "targets"):
            f = path / split / f"{name}.npy"
            if not f.is_file():
                raise FileNotFoundError(f"mad-lab data file {f} not found (expected {{train,test}}/{{inputs,targets}}.npy)")
            arrs[name] = np.load(f, allow_pickle=False)
        L = arrs["inputs"].shape[1]
        feats = datasets.Features({"input_ids": datasets.List(datasets.Value("int32"), length=L),
                                   "targets": datasets.List(datasets.Value("int32"), length=L)})
        out[split] = datasets.Dataset.from_dict({"input_ids": arrs["inputs"].astype(np.int32),
                                                 "targets": arrs["targets"].astype(np.int32)}, features=feats)
    return datasets.DatasetDict(out)
