"""The MAD tasks as a ``datasets`` builder (datasets >= 4 has no loading scripts: import the class and instantiate it).

:class:`MADBuilder` is an ``ArrowBasedBuilder`` whose configs are the six task baselines (named by task) and the 66
benchmark settings (named as :attr:`~hf_ext.mad.config.MADTaskConfig.name`); any mad-lab setting can be overridden
as a builder kwarg (the cache key then includes it). Columns ``input_ids`` and ``targets`` are fixed-length int32
lists with ``-100`` at ignored target positions; there are ``train`` and ``test`` splits (mad-lab has no validation
split). ``fast`` mode is sharded (``download_and_prepare(num_proc=N)``); ``madlab`` mode is one sequential shard
(the reference's single RNG stream), generated once per builder for both splits.

Example:
    >>> from hf_ext.mad.builder import MADBuilder
    >>> b = MADBuilder(cache_dir="/tmp/mad-cache", config_name="in-context-recall", seq_len=64,
    ...                num_train_examples=32, num_test_examples=8)
    >>> b.download_and_prepare()
    >>> b.as_dataset()["train"].with_format("numpy")[:]["input_ids"].shape
    (32, 63)
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

import datasets
import numpy as np
import pyarrow as pa

from .config import GENERATOR_VERSION, TASKS, MADTaskConfig, baseline, benchmark_grid
from .generators import SPLITS, generate, generate_splits

_TASK_FIELDS = [f.name for f in dataclasses.fields(MADTaskConfig)]

# The builder config carries MADTaskConfig's fields, with its defaults, as attributes (datasets sets config kwargs
# with setattr and hashes them into the cache key): derived from MADTaskConfig, so a new task field needs no edit here.
_MADTaskFields = dataclasses.make_dataclass(
    "_MADTaskFields", [(f.name, f.type, dataclasses.field(default=f.default)) for f in dataclasses.fields(MADTaskConfig)],
    bases=(datasets.BuilderConfig,))
_MADTaskFields.__module__ = __name__  # picklable by reference (datasets fingerprints configs with dill)

#: numpy version at import (datasets' streaming patches this module's globals, so read it once here).
NUMPY_VERSION = np.__version__
#: Rows per generated Arrow table / per fast-mode shard.
BATCH_ROWS = 1024
SHARD_ROWS = 4096


@dataclass
class MADBuilderConfig(_MADTaskFields):
    """A :class:`datasets.BuilderConfig` carrying the :class:`~hf_ext.mad.config.MADTaskConfig` fields (same names
    and defaults: ``task``, ``vocab_size``, ``seq_len`` … ``mode``, ``generator_version``).

    Example:
        >>> MADBuilderConfig.from_task_config(baseline("CR")).task_config().name
        'CR_vs-16_sl-128_ntr-12800'
        >>> MADBuilderConfig().seq_len == MADTaskConfig().seq_len
        True
    """

    def task_config(self) -> MADTaskConfig:
        """The validated :class:`MADTaskConfig` of this builder config (raises ``ValueError`` on bad settings)."""
        return MADTaskConfig(**{k: getattr(self, k) for k in _TASK_FIELDS})

    @classmethod
    def from_task_config(cls, cfg: MADTaskConfig, name: str | None = None) -> MADBuilderConfig:
        """The builder config of a :class:`~hf_ext.mad.config.MADTaskConfig` (named ``name`` or the task)."""
        return cls(name=name or cfg.name, version=datasets.Version(GENERATOR_VERSION),
                   description=f"MAD {cfg.task} ({cfg.madlab_path})", **cfg.to_dict())


def _builder_configs() -> list[MADBuilderConfig]:
    out = [MADBuilderConfig.from_task_config(baseline(t), name=t) for t in TASKS]
    out += [MADBuilderConfig.from_task_config(c) for c in benchmark_grid(TASKS)]
    return out


def to_arrow_table(x: np.ndarray, y: np.ndarray) -> pa.Table:
    """The Arrow table of ``N`` examples: ``input_ids`` and ``targets`` as fixed-size int32 lists of ``L`` ids.

    Args:
        x, y: ``[N, L]`` integer arrays (``-100`` at ignored target positions).

    Example:
        >>> to_arrow_table(np.zeros((2, 3)), np.full((2, 3), -100)).schema.names
        ['input_ids', 'targets']
    """
    L = x.shape[1]
    cols = {name: pa.FixedSizeListArray.from_arrays(pa.array(a.astype(np.int32).reshape(-1)), L)
            for name, a in (("input_ids", x), ("targets", y))}
    return pa.table(cols)


class MADBuilder(datasets.ArrowBasedBuilder):
    """Builder of the six MAD synthetic tasks (see the module docstring for the call pattern).

    ``BUILDER_CONFIGS``: the six task baselines (``"in-context-recall"`` …) and the 66 grid names
    (``"CR_vs-64_sl-128_ntr-12800"`` …). ``DEFAULT_CONFIG_NAME = "in-context-recall"``. The constructor takes
    ``datasets.DatasetBuilder``'s arguments (``config_name``, ``cache_dir``, the config's fields as overrides …).
    """

    VERSION = datasets.Version(GENERATOR_VERSION)
    BUILDER_CONFIG_CLASS = MADBuilderConfig
    BUILDER_CONFIGS = _builder_configs()
    DEFAULT_CONFIG_NAME = "in-context-recall"

    def __init__(self, *args: Any, **kwargs: Any):
        kwargs.setdefault("dataset_name", "mad")
        super().__init__(*args, **kwargs)
        self.task_config = self.config.task_config()  # validates the settings (ValueError naming the constraint)
        self._madlab_cache: dict | None = None

    def _info(self) -> datasets.DatasetInfo:
        cfg = self.config.task_config()
        L = cfg.output_length
        meta = {"config": cfg.to_dict(), "name": cfg.name, "madlab_path": cfg.madlab_path,
                "generator_version": GENERATOR_VERSION, "numpy_version": NUMPY_VERSION, "mode": cfg.mode,
                "ignore_index": -100}
        feats = datasets.Features({"input_ids": datasets.List(datasets.Value("int32"), length=L),
                                   "targets": datasets.List(datasets.Value("int32"), length=L)})
        return datasets.DatasetInfo(
            description=("MAD synthetic task (Poli et al., ICML 2024), generated by hf_ext.mad. "
                         "targets are aligned to input positions (no shift needed); -100 = ignored.\n"
                         + json.dumps(meta, sort_keys=True)),
            features=feats,
            homepage="https://github.com/athms/mad-lab",
            citation="@inproceedings{poli2024mad, title={Mechanistic Design and Scaling of Hybrid Architectures}, "
                     "author={Poli, Michael and Thomas, Armin W and others}, booktitle={ICML}, year={2024}}",
            license="mit",
        )

    def _split_generators(self, dl_manager):
        cfg = self.config.task_config()
        gens = []
        for split in SPLITS:
            n = cfg.num_train_examples if split == "train" else cfg.num_test_examples
            if cfg.mode == "fast":
                shards = [(i, s, min(s + SHARD_ROWS, n)) for i, s in enumerate(range(0, n, SHARD_ROWS))]
            else:
                shards = [(0, 0, n)]
            gens.append(datasets.SplitGenerator(name=split, gen_kwargs={"split": split, "shards": shards}))
        return gens

    def _madlab_arrays(self, split: str):
        if self._madlab_cache is None:
            self._madlab_cache = generate_splits(self.config.task_config())
        return self._madlab_cache[split]

    def _generate_tables(self, split: str, shards: list):
        from datasets.builder import Key

        cfg = self.config.task_config()
        for shard_id, start, stop in shards:
            if cfg.mode == "fast":
                x, y = generate(cfg, split, start, stop)
            else:
                x, y = self._madlab_arrays(split)
                x, y = x[start:stop], y[start:stop]
            for b, s in enumerate(range(0, len(x), BATCH_ROWS)):
                yield Key(shard_id, b), to_arrow_table(x[s:s + BATCH_ROWS], y[s:s + BATCH_ROWS])
