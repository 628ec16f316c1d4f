"""Task settings of the six MAD tasks plus zoology's MQAR: :class:`MADTaskConfig`, the baselines and the 66-setting
MAD benchmark grid.

Field names and defaults are those of mad-lab's ``MADConfig`` (``athms/mad-lab:mad/configs.py@0f49a45``), so that
``load_mad(..., vocab_size=64)`` means what it means there. Pure Python: no numpy, no torch.

Example:
    >>> from hf_ext.mad.config import baseline, benchmark_grid
    >>> cfg = baseline("in-context-recall")
    >>> cfg.name, cfg.output_length
    ('CR_vs-16_sl-128_ntr-12800', 127)
    >>> len(benchmark_grid())
    66
    >>> cfg.madlab_path
    't-CR_vs-16_sl-128_ntr-12800_nte-1280_km-1_vm-1_mq-1_fn-0#0_nvs-0_ntc-0_s-12345'
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, fields
from typing import Any

from hf_ext.utils.validation import check_bool, check_float, check_int

#: Bump when any generator's output changes (part of every cache key and of the dataset card).
GENERATOR_VERSION = "1.0.0"

#: The six MAD tasks in mad-lab's ``task_registry`` order (the benchmark grid and the MAD score).
MAD_TASKS: tuple[str, ...] = (
    "in-context-recall",
    "noisy-in-context-recall",
    "fuzzy-in-context-recall",
    "memorization",
    "compression",
    "selective-copying",
)
MQAR = "multi-query-associative-recall"
#: Every task: the six MAD tasks and zoology's multi-query associative recall (:mod:`hf_ext.mad.generators_mqar`).
TASKS: tuple[str, ...] = MAD_TASKS + (MQAR,)
#: Fields that only MQAR reads (other tasks must leave them at their defaults).
MQAR_FIELDS: tuple[str, ...] = ("num_kv_pairs", "power_a", "random_non_queries")
SHORTHANDS: dict[str, str] = {
    "in-context-recall": "CR",
    "noisy-in-context-recall": "NR",
    "fuzzy-in-context-recall": "FR",
    "memorization": "M",
    "compression": "C",
    "selective-copying": "SC",
    MQAR: "MQAR",
}
TASK_FROM_SHORTHAND: dict[str, str] = {v: k for k, v in SHORTHANDS.items()}
#: Stable integer ids used by the counter-based ``fast`` generators.
TASK_IDS: dict[str, int] = {t: i + 1 for i, t in enumerate(TASKS)}
MODES: tuple[str, ...] = ("madlab", "fast")
IGNORE_INDEX = -100

#: ``configs/tasks/<task>.yml`` of mad-lab: the baseline and the one-at-a-time changes (in file order).
_TASK_YML: dict[str, dict[str, Any]] = {
    "in-context-recall": {
        "baseline": {"vocab_size": 16, "seq_len": 128, "num_train_examples": 12800, "multi_query": True},
        "changes": {"vocab_size": [32, 64, 128], "seq_len": [256, 512, 1024],
                    "num_train_examples": [6400, 3200, 1600, 800]},
    },
    "noisy-in-context-recall": {
        "baseline": {"vocab_size": 32, "noise_vocab_size": 16, "seq_len": 128, "num_train_examples": 12800,
                     "multi_query": True, "frac_noise": 0.2},
        "changes": {"vocab_size": [48, 80, 144], "seq_len": [256, 512, 1024],
                    "num_train_examples": [6400, 3200, 1600, 800], "frac_noise": [0.4, 0.6, 0.8]},
    },
    "fuzzy-in-context-recall": {
        "baseline": {"vocab_size": 16, "seq_len": 128, "num_train_examples": 12800, "multi_query": True,
                     "k_motif_size": 3, "v_motif_size": 3},
        "changes": {"vocab_size": [32, 64, 128], "seq_len": [256, 512, 1024],
                    "num_train_examples": [6400, 3200, 1600, 800]},
    },
    "memorization": {
        "baseline": {"vocab_size": 256, "seq_len": 32, "num_train_examples": 256},
        "changes": {"vocab_size": [512, 1024, 2048, 4096, 8192]},
    },
    "compression": {
        "baseline": {"vocab_size": 16, "seq_len": 32, "num_train_examples": 12800},
        "changes": {"vocab_size": [32, 64, 128], "seq_len": [64, 128, 256],
                    "num_train_examples": [6400, 3200, 1600, 800]},
    },
    "selective-copying": {
        "baseline": {"vocab_size": 16, "seq_len": 256, "num_tokens_to_copy": 16, "num_train_examples": 12800},
        "changes": {"vocab_size": [32, 64, 128], "seq_len": [512, 1024],
                    "num_train_examples": [6400, 3200, 1600, 800], "num_tokens_to_copy": [32, 64, 96]},
    },
    # zoology's examples/ config (Figure 2 sweeps seq_len 64..512 and num_kv_pairs 4..64 at vocab 8192)
    MQAR: {
        "baseline": {"vocab_size": 8192, "seq_len": 64, "num_kv_pairs": 4, "num_train_examples": 100_000,
                     "num_test_examples": 3_000},
        "changes": {"seq_len": [128, 256, 512], "num_kv_pairs": [8, 16]},
    },
}

#: The difficulty knobs of each task (the keys of its ``changes``), for plots of accuracy vs knob.
KNOBS: dict[str, tuple[str, ...]] = {t: tuple(y["changes"]) for t, y in _TASK_YML.items()}

# short names used in config names: field -> abbreviation (mad-lab's ``KEY_TO_SHORTHAND``)
_ABBREV = {"vocab_size": "vs", "seq_len": "sl", "num_train_examples": "ntr", "num_test_examples": "nte",
           "k_motif_size": "km", "v_motif_size": "vm", "multi_query": "mq", "frac_noise": "fn",
           "noise_vocab_size": "nvs", "num_tokens_to_copy": "ntc", "seed": "s", "num_kv_pairs": "nkv",
           "power_a": "pa", "random_non_queries": "rnq"}
_NAME_ALWAYS = {"in-context-recall": (), "noisy-in-context-recall": ("frac_noise",),
                "fuzzy-in-context-recall": (), "memorization": (), "compression": (),
                "selective-copying": ("num_tokens_to_copy",), MQAR: ("num_kv_pairs",)}
_MADLAB_PATH_KEYS = ("vocab_size", "seq_len", "num_train_examples", "num_test_examples", "k_motif_size",
                     "v_motif_size", "multi_query", "frac_noise", "noise_vocab_size", "num_tokens_to_copy", "seed")


def resolve_task(task: str) -> str:
    """Canonical task name of ``task`` (a task name such as ``"in-context-recall"`` or a shorthand such as ``"CR"``).

    Raises:
        ValueError: unknown task; the message lists the seven tasks.

    Example:
        >>> resolve_task("SC")
        'selective-copying'
    """
    if task in SHORTHANDS:
        return task
    if task in TASK_FROM_SHORTHAND:
        return TASK_FROM_SHORTHAND[task]
    raise ValueError(f"unknown MAD task {task!r}; expected one of {list(TASKS)} or a shorthand {list(TASK_FROM_SHORTHAND)}")


def _fmt(v: Any) -> str:
    if isinstance(v, bool):
        return str(int(v))
    return str(v)


@dataclass(frozen=True)
class MADTaskConfig:
    """One MAD task setting (the task part of mad-lab's ``MADConfig``) plus ``seed``, ``mode`` and the generator version.

    Attributes:
        task: one of :data:`TASKS`.
        vocab_size, seq_len, frac_noise, noise_vocab_size, num_tokens_to_copy, k_motif_size, v_motif_size,
        multi_query, num_train_examples, num_test_examples: as in mad-lab (``MADConfig`` defaults). Note that
            ``noise_vocab_size`` defaults to 0 here, as ``MADConfig`` passes it, not to the generator's own 16.
        num_kv_pairs, power_a, random_non_queries: MQAR only (zoology's ``MQARConfig`` defaults 8, 0.01, True;
            see :mod:`hf_ext.mad.generators_mqar`); other tasks must leave them at their defaults.
        seed: the data seed (mad-lab 12345).
        mode: ``"madlab"`` (byte-identical to mad-lab at this seed) or ``"fast"`` (vectorised, counter-based seeds).
        generator_version: :data:`GENERATOR_VERSION` (part of the cache key).

    Validation happens at construction: impossible settings raise ``ValueError`` naming the constraint.

    Example:
        >>> MADTaskConfig("selective-copying", seq_len=256, num_tokens_to_copy=16).output_length
        256
        >>> MADTaskConfig("selective-copying", seq_len=32, num_tokens_to_copy=16)
        Traceback (most recent call last):
        ...
        ValueError: selective-copying: seq_len=32 must be > 2 * num_tokens_to_copy + 1 = 33 (the 16 tokens to copy, their 16 answer slots and the copy token must fit)
    """

    task: str = "in-context-recall"
    vocab_size: int = 16
    seq_len: int = 128
    frac_noise: float = 0.0
    noise_vocab_size: int = 0
    num_tokens_to_copy: int = 0
    k_motif_size: int = 1
    v_motif_size: int = 1
    multi_query: bool = True
    num_kv_pairs: int = 8
    power_a: float = 0.01
    random_non_queries: bool = True
    num_train_examples: int = 12_800
    num_test_examples: int = 1_280
    seed: int = 12345
    mode: str = "madlab"
    generator_version: str = GENERATOR_VERSION

    def __post_init__(self) -> None:
        object.__setattr__(self, "task", resolve_task(self.task))
        for f in ("vocab_size", "seq_len", "noise_vocab_size", "num_tokens_to_copy", "k_motif_size", "v_motif_size",
                  "num_kv_pairs", "num_train_examples", "num_test_examples", "seed"):
            object.__setattr__(self, f, check_int(f"MADTaskConfig.{f}", getattr(self, f), min=0))  # numpy ints too
        object.__setattr__(self, "frac_noise", check_float("MADTaskConfig.frac_noise", self.frac_noise))
        object.__setattr__(self, "power_a", check_float("MADTaskConfig.power_a", self.power_a))
        object.__setattr__(self, "multi_query", check_bool("MADTaskConfig.multi_query", self.multi_query))
        object.__setattr__(self, "random_non_queries", check_bool("MADTaskConfig.random_non_queries",
                                                                  self.random_non_queries))
        if self.mode not in MODES:
            raise ValueError(f"unknown generator mode {self.mode!r}; expected one of {list(MODES)}")
        if self.num_train_examples < 1 or self.num_test_examples < 1:
            raise ValueError(f"{self.task}: num_train_examples and num_test_examples must be >= 1, got "
                             f"{self.num_train_examples} and {self.num_test_examples}")
        self._validate()

    # ------------------------------------------------------------------------------------------------ validation
    def _validate(self) -> None:  # noqa: C901 - one branch per task
        t, V, L = self.task, self.vocab_size, self.seq_len
        if t == MQAR:
            odd = {f: getattr(self, f) for f in ("frac_noise", "noise_vocab_size", "num_tokens_to_copy", "k_motif_size",
                                                 "v_motif_size") if getattr(self, f) != _DEFAULTS[f]}
            if odd:
                raise ValueError(f"{t}: settings {odd} do not apply to MQAR (it reads vocab_size, seq_len, "
                                 f"{', '.join(MQAR_FIELDS)})")
            validate_mqar(V, L, self.num_kv_pairs, self.power_a)
            return
        odd = {f: getattr(self, f) for f in MQAR_FIELDS if getattr(self, f) != _DEFAULTS[f]}
        if odd:
            raise ValueError(f"{t}: settings {odd} apply to {MQAR!r} only")
        if not 0.0 <= self.frac_noise < 1.0:
            raise ValueError(f"{t}: frac_noise={self.frac_noise} must satisfy 0 <= frac_noise < 1")
        if self.frac_noise > 0 and self.noise_vocab_size == 0 and t != "selective-copying":
            raise ValueError(f"{t}: frac_noise={self.frac_noise} > 0 needs noise_vocab_size > 0")
        if t in ("in-context-recall", "noisy-in-context-recall"):
            nsv = (V if self.multi_query else V - 1) - self.noise_vocab_size
            if nsv < 4:  # with 1 key or 1 value token every target is the same token: nothing to recall
                raise ValueError(f"{t}: vocab_size={V} is too small: after {0 if self.multi_query else 1} special "
                                 f"token(s) and noise_vocab_size={self.noise_vocab_size} noise tokens, "
                                 f"{nsv} tokens remain but keys and values need at least 2 each (>= 4); use "
                                 f"vocab_size >= {V + 4 - nsv}")
            if L % 2:
                raise ValueError(f"{t}: seq_len={L} must be even (key-value pairs of 2 tokens)")
            if L < 4:
                raise ValueError(f"{t}: seq_len={L} must be >= 4 (at least one key-value pair plus the probe pair)")
        elif t == "fuzzy-in-context-recall":
            nsv = (V - 1 if self.multi_query else V - 2) - self.noise_vocab_size
            nk, nv = nsv // 2, nsv - nsv // 2
            if self.k_motif_size < 1 or self.v_motif_size < 1:
                raise ValueError(f"{t}: k_motif_size and v_motif_size must be >= 1, got "
                                 f"{self.k_motif_size}, {self.v_motif_size}")
            if nk < max(2, self.k_motif_size) or nv < max(2, self.v_motif_size):
                raise ValueError(f"{t}: vocab_size={V} is too small: the key vocab has {nk} tokens and the value vocab "
                                 f"{nv} (after the pad token and noise), but motifs of k_motif_size="
                                 f"{self.k_motif_size} / v_motif_size={self.v_motif_size} distinct tokens (and at least "
                                 "2 of each, else the data are constant) are needed")
            need = 2 * (self.k_motif_size + self.v_motif_size)
            if L <= need:
                raise ValueError(f"{t}: seq_len={L} must be > 2 * (k_motif_size + v_motif_size) = {need} so that "
                                 "the probe key-value pair and at least one more pair fit")
        elif t == "memorization":
            nsv = V - 1 - self.noise_vocab_size
            if nsv < 4:  # with 1 key or 1 value token the memorised map is constant
                raise ValueError(f"{t}: vocab_size={V} is too small: after the insert token and "
                                 f"noise_vocab_size={self.noise_vocab_size} noise tokens, {nsv} remain but keys and "
                                 f"values need at least 2 each (>= 4); use vocab_size >= {V + 4 - nsv}")
            if L % 2 or L < 2:
                raise ValueError(f"{t}: seq_len={L} must be even and >= 2 (pairs of [key, insert])")
        elif t == "compression":
            if V - 1 - self.noise_vocab_size < 2:  # one content token: every sequence is the same
                raise ValueError(f"{t}: vocab_size={V} is too small: the compression token and "
                                 f"noise_vocab_size={self.noise_vocab_size} leave no content tokens (need >= 2)")
            if L < 2:
                raise ValueError(f"{t}: seq_len={L} must be >= 2 (content tokens plus the compression token)")
        elif t == "selective-copying":
            if V < 4:  # one content token: every sequence is the same
                raise ValueError(f"{t}: vocab_size={V} is too small for the copy and blank special tokens plus "
                                 "at least 2 content tokens (need >= 4)")
            if self.num_tokens_to_copy < 1:
                raise ValueError(f"{t}: num_tokens_to_copy={self.num_tokens_to_copy} must be >= 1 (mad-lab's "
                                 "benchmark uses 16)")
            if L <= 2 * self.num_tokens_to_copy + 1:
                raise ValueError(
                    f"{t}: seq_len={L} must be > 2 * num_tokens_to_copy + 1 = {2 * self.num_tokens_to_copy + 1} "
                    f"(the {self.num_tokens_to_copy} tokens to copy, their {self.num_tokens_to_copy} answer slots and "
                    "the copy token must fit)")

    # ------------------------------------------------------------------------------------------------ properties
    @property
    def shorthand(self) -> str:
        """mad-lab's task shorthand (CR, NR, FR, M, C, SC)."""
        return SHORTHANDS[self.task]

    @property
    def output_length(self) -> int:
        """Length of ``input_ids``/``targets``: ``seq_len - 1`` for multi-query (noisy) recall, else ``seq_len``."""
        if self.task in ("in-context-recall", "noisy-in-context-recall") and self.multi_query:
            return self.seq_len - 1
        return self.seq_len

    @property
    def name(self) -> str:
        """Short unique name, e.g. ``CR_vs-16_sl-128_ntr-12800`` (the 66 grid names; non-default fields are appended)."""
        base = baseline(self.task)
        parts = [self.shorthand] + [f"{_ABBREV[k]}-{_fmt(getattr(self, k))}"
                                    for k in ("vocab_size", "seq_len", "num_train_examples")]
        parts += [f"{_ABBREV[k]}-{_fmt(getattr(self, k))}" for k in _NAME_ALWAYS[self.task]]
        for k in ("num_test_examples", "k_motif_size", "v_motif_size", "multi_query", "frac_noise",
                  "noise_vocab_size", "num_tokens_to_copy", "seed") + MQAR_FIELDS:
            if k in _NAME_ALWAYS[self.task]:
                continue
            if getattr(self, k) != getattr(base, k):
                parts.append(f"{_ABBREV[k]}-{_fmt(getattr(self, k))}")
        if self.mode != "madlab":
            parts.append(self.mode)
        return "_".join(parts)

    @property
    def madlab_path(self) -> str:
        """mad-lab's dataset folder name (``mad/paths.py:make_dataset_path``), e.g. the Zenodo folder of this setting."""
        parts = [f"t-{self.shorthand}"]
        for k in _MADLAB_PATH_KEYS:
            v = getattr(self, k)
            v = str(int(v)) if isinstance(v, bool) else str(v).replace(".", "#")
            parts.append(f"{_ABBREV[k]}-{v}")
        return "_".join(parts)

    def task_kwargs(self) -> dict[str, Any]:
        """The setting fields only (no ``task``/``mode``/``generator_version``/``seed``; the MQAR-only fields only
        for MQAR)."""
        skip = {"task", "mode", "generator_version", "seed"} | (set() if self.task == MQAR else set(MQAR_FIELDS))
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in skip}

    def to_dict(self) -> dict[str, Any]:
        """All fields as a JSON-able dict (round-trips through :meth:`from_dict`); the MQAR-only fields are left out
        of the other tasks' dicts (always at their defaults there), so their fingerprints predate MQAR unchanged."""
        d = dataclasses.asdict(self)
        if self.task != MQAR:
            for f in MQAR_FIELDS:
                d.pop(f)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MADTaskConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError``."""
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown MADTaskConfig field(s) {sorted(unknown)}; valid: {[f.name for f in fields(cls)]}")
        return cls(**d)

    def replace(self, **overrides: Any) -> MADTaskConfig:
        """A copy with ``overrides`` (mad-lab setting names); unknown names raise ``ValueError``.

        Example:
            >>> baseline("CR").replace(vocab_size=64).name
            'CR_vs-64_sl-128_ntr-12800'
        """
        valid = {f.name for f in fields(self)}
        bad = sorted(set(overrides) - valid)
        if bad:
            raise ValueError(f"unknown MAD setting(s) {bad}; valid names (mad-lab's MADConfig): {sorted(valid)}")
        return dataclasses.replace(self, **overrides)

    def fingerprint(self) -> str:
        """md5 of the config JSON (a secondary cache key, as Zoology does)."""
        return hashlib.md5(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()


_DEFAULTS = {f.name: f.default for f in fields(MADTaskConfig)}


def validate_mqar(vocab_size: int, seq_len: int, num_kv_pairs: int, power_a: float) -> None:
    """Raise ``ValueError`` naming the violated MQAR constraint (zoology's asserts, plus ``power_a > 0`` and
    ``num_kv_pairs >= 1``).

    Example:
        >>> validate_mqar(vocab_size=64, seq_len=128, num_kv_pairs=8, power_a=0.01)
        Traceback (most recent call last):
        ...
        ValueError: multi-query-associative-recall: vocab_size=64 must be > seq_len=128 (zoology's constraint)
    """
    t = "multi-query-associative-recall"
    if seq_len % 2:
        raise ValueError(f"{t}: seq_len={seq_len} must be even (key-value pairs of 2 tokens)")
    if vocab_size <= seq_len:
        raise ValueError(f"{t}: vocab_size={vocab_size} must be > seq_len={seq_len} (zoology's constraint)")
    if num_kv_pairs < 1:
        raise ValueError(f"{t}: num_kv_pairs={num_kv_pairs} must be >= 1")
    if 4 * num_kv_pairs > seq_len:
        raise ValueError(f"{t}: seq_len={seq_len} must be >= 4 * num_kv_pairs = {4 * num_kv_pairs} (the context "
                         "pairs plus one query slot pair per key)")
    if num_kv_pairs > vocab_size // 2 - 1:
        raise ValueError(f"{t}: num_kv_pairs={num_kv_pairs} distinct keys need vocab_size // 2 - 1 >= num_kv_pairs, "
                         f"got vocab_size={vocab_size}")
    if not power_a > 0:
        raise ValueError(f"{t}: power_a={power_a!r} must be > 0 (1.0 = uniform gaps, zoology's default 0.01)")


def baseline(task: str, **overrides: Any) -> MADTaskConfig:
    """The baseline setting of ``task`` (mad-lab ``configs/tasks/<task>.yml``), with optional ``overrides``.

    Example:
        >>> baseline("memorization").vocab_size
        256
    """
    task = resolve_task(task)
    return MADTaskConfig(task=task, **_TASK_YML[task]["baseline"]).replace(**overrides) if overrides else \
        MADTaskConfig(task=task, **_TASK_YML[task]["baseline"])


def benchmark_grid(tasks: tuple[str, ...] | list[str] | None = None, **overrides: Any) -> list[MADTaskConfig]:
    """The 66 MAD benchmark settings (baseline + one-at-a-time changes per task), in mad-lab's order.

    Args:
        tasks: restrict to these tasks (names or shorthands); default the six MAD tasks (``["MQAR"]`` gives MQAR's
            six settings: zoology's baseline, seq_len 128/256/512 and num_kv_pairs 8/16).
        **overrides: applied to every setting (e.g. ``mode="fast"``, ``num_test_examples=256``), as mad-lab's
            ``make_benchmark_mad_configs(**kwargs)`` applies them to the baselines.

    Returns:
        list of :class:`MADTaskConfig`; per task 11/14/11/6/11/13 (CR/NR/FR/M/C/SC).

    Example:
        >>> [c.name for c in benchmark_grid(["M"])][:2]
        ['M_vs-256_sl-32_ntr-256', 'M_vs-512_sl-32_ntr-256']
    """
    wanted = MAD_TASKS if tasks is None else tuple(resolve_task(t) for t in tasks)
    out: list[MADTaskConfig] = []
    for task in TASKS:
        if task not in wanted:
            continue
        base = baseline(task, **overrides)
        out.append(base)
        for key, values in _TASK_YML[task]["changes"].items():
            for value in values:
                out.append(base.replace(**{key: value}))
    return out


def config_from_name(name: str, **overrides: Any) -> MADTaskConfig:
    """Resolve a task name, a shorthand or one of the 66 grid names (see :attr:`MADTaskConfig.name`) to a config.

    Raises:
        ValueError: the name is neither; the message gives examples of valid names.

    Example:
        >>> config_from_name("CR_vs-64_sl-128_ntr-12800").vocab_size
        64
    """
    if name in SHORTHANDS or name in TASK_FROM_SHORTHAND:
        return baseline(name, **overrides)
    grid = {c.name: c for c in benchmark_grid(TASKS)}
    if name in grid:
        return grid[name].replace(**overrides) if overrides else grid[name]
    raise ValueError(f"unknown MAD task or config name {name!r}; use a task ({list(TASKS)}), a shorthand "
                     f"({list(TASK_FROM_SHORTHAND)}) or a grid name such as {list(grid)[:2]} (see benchmark_grid())")
