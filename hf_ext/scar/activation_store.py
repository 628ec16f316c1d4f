"""SCAR token activations on disk: sharded safetensors written while caching, read back memory-mapped for training.

The in-memory cache (:func:`hf_ext.scar.build_activation_dataset` without ``output_dir``) holds every token's
activation in RAM: ``tokens × D × 4`` bytes (Llama-3-8B, D = 4096: 16 KiB per token, 1 GiB per 65k tokens), which
does not scale to the released SCAR runs. With ``output_dir`` the activations stream to disk as they are computed
(:class:`ActivationWriter`: at most one shard in memory) and training reads them through :class:`ActivationStore`, a
``torch.utils.data.Dataset`` over memory-mapped shards. A shard's mapped pages are handed back to the kernel as soon
as a batch's rows have been copied out of it (``madvise(MADV_DONTNEED)``; they stay in the page cache): the kernel
maps whole page-cache folios (up to MiBs) around every touched row, so a shuffled epoch would otherwise map the whole
cache into the process. Training memory is then bounded by one shard, however large the cache grows.

Layout of a store folder: ``shard-00000.safetensors`` … (tensors ``activations`` ``[n, D]`` float32/float16,
``labels`` ``[n, C]`` float32, ``sequence_id`` ``[n]`` int64) and ``activation_store.json`` (widths, dtype, rows per
shard). Shards are plain safetensors files: ``safetensors.torch.load_file`` reads any of them.

Example:
    >>> import tempfile, torch
    >>> folder = tempfile.mkdtemp()
    >>> with ActivationWriter(folder, n_inputs=4, num_concepts=1, shard_mb=0.0001) as writer:
    ...     writer.write(torch.randn(10, 4), torch.ones(10, 1), torch.arange(10))
    >>> store = ActivationStore(folder)
    >>> len(store), store.num_shards, store[[0, 9]]["activations"].shape
    (10, 2, torch.Size([2, 4]))
"""

from __future__ import annotations

import json
import mmap
import os
import shutil
import struct
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hf_ext.utils.validation import check_float, check_size

__all__ = ["INDEX_NAME", "ActivationStore", "ActivationWriter", "is_activation_store"]

INDEX_NAME = "activation_store.json"
_FORMAT = 1
_NP = {"float32": np.float32, "float16": np.float16}
_ST = {"F32": np.float32, "F16": np.float16, "I64": np.int64}
_TORCH = {"float32": torch.float32, "float16": torch.float16}
_MB = 1024 * 1024


def is_activation_store(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder written by :class:`ActivationWriter`."""
    return (Path(path) / INDEX_NAME).is_file()


class ActivationWriter:
    """Append token activations to sharded safetensors files in ``directory`` (a context manager).

    Args:
        directory: the store folder (created).
        n_inputs: activation width ``D``.
        num_concepts: label columns ``C``.
        storage_dtype: ``"float32"`` or ``"float16"``.
        shard_mb: activations per shard file in MiB (the last shard may be smaller); bounds the writer's buffer
            (about 2× this) and the pages a reader keeps mapped.
        overwrite: replace an existing store in ``directory``.

    Raises:
        ValueError: bad widths or dtype, or ``directory`` already holds a store (without ``overwrite``).
    """

    def __init__(self, directory: str | os.PathLike, *, n_inputs: int, num_concepts: int,
                 storage_dtype: str = "float32", shard_mb: float = 128.0, overwrite: bool = False) -> None:
        if storage_dtype not in _NP:
            raise ValueError(f"storage_dtype must be one of {sorted(_NP)}, got {storage_dtype!r}")
        check_size("n_inputs", n_inputs)
        check_size("num_concepts", num_concepts)
        check_float("shard_mb", shard_mb, min=0, min_open=True)
        self.directory = Path(directory)
        if is_activation_store(self.directory) or any(self.directory.glob("shard-*.safetensors")):
            if not overwrite:
                raise ValueError(f"{str(self.directory)!r} already holds an activation store; pass overwrite=True or "
                                 "another folder")
            shutil.rmtree(self.directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.n_inputs, self.num_concepts, self.storage_dtype = n_inputs, num_concepts, storage_dtype
        row_bytes = n_inputs * np.dtype(_NP[storage_dtype]).itemsize
        self._shard_rows = max(1, int(shard_mb * _MB) // row_bytes)
        self._buffer: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self._buffered = 0
        self._shards: list[dict[str, Any]] = []
        self._closed = False

    def write(self, activations: torch.Tensor, labels: torch.Tensor, sequence_id: torch.Tensor) -> None:
        """Append ``n`` rows: ``activations`` ``[n, D]``, ``labels`` ``[n, C]``, ``sequence_id`` ``[n]``.

        Raises:
            ValueError: shapes that do not match each other or the store's widths; writing after :meth:`close`.
        """
        if self._closed:
            raise ValueError("this ActivationWriter is closed")
        a, y, s = torch.as_tensor(activations), torch.as_tensor(labels), torch.as_tensor(sequence_id)
        if y.dim() == 1:
            y = y[:, None]
        if a.dim() != 2 or a.shape[1] != self.n_inputs:
            raise ValueError(f"activations must be [n, {self.n_inputs}], got {tuple(a.shape)}")
        if tuple(y.shape) != (a.shape[0], self.num_concepts) or tuple(s.shape) != (a.shape[0],):
            raise ValueError(f"labels must be [{a.shape[0]}, {self.num_concepts}] and sequence_id [{a.shape[0]}], got "
                             f"{tuple(y.shape)} and {tuple(s.shape)}")
        if not a.shape[0]:
            return
        self._buffer.append((a.detach().cpu().to(_TORCH[self.storage_dtype]), y.detach().cpu().float(),
                             s.detach().cpu().long()))
        self._buffered += a.shape[0]
        while self._buffered >= self._shard_rows:
            self._flush(self._shard_rows)

    def _flush(self, rows: int | None = None) -> None:
        """Write the first ``rows`` buffered rows (default: all) as the next shard; keep the rest buffered."""
        from safetensors.torch import save_file

        if not self._buffered:
            return
        columns = [torch.cat([b[i] for b in self._buffer]) for i in range(3)]
        rows = self._buffered if rows is None else rows
        rest = [c[rows:] for c in columns]
        self._buffer = [tuple(rest)] if rest[0].shape[0] else []
        self._buffered = int(rest[0].shape[0])
        tensors = {"activations": columns[0][:rows].contiguous(), "labels": columns[1][:rows].contiguous(),
                   "sequence_id": columns[2][:rows].contiguous()}
        name = f"shard-{len(self._shards):05d}.safetensors"
        save_file(tensors, str(self.directory / name), metadata={"format": "hf_ext.scar.activation_store"})
        self._shards.append({"file": name, "rows": rows})

    def close(self) -> ActivationStore:
        """Write the last shard and the index; returns the store opened for reading.

        Raises:
            ValueError: nothing was written.
        """
        if not self._closed:
            self._flush()
            self._closed = True
            if not self._shards:
                raise ValueError(f"no activations were written to {str(self.directory)!r}")
            index = {"format": _FORMAT, "n_inputs": self.n_inputs, "num_concepts": self.num_concepts,
                     "storage_dtype": self.storage_dtype, "num_rows": sum(s["rows"] for s in self._shards),
                     "shards": self._shards}
            (self.directory / INDEX_NAME).write_text(json.dumps(index, indent=1), encoding="utf-8")
        return ActivationStore(self.directory)

    def __enter__(self) -> ActivationWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:  # an interrupted cache has no index: it cannot be mistaken for a complete one
            self._closed = True


def _safetensors_layout(path: Path) -> tuple[int, dict[str, Any]]:
    """``(data start, header)`` of a safetensors file (8-byte little-endian header size, JSON header, data)."""
    with open(path, "rb") as fh:
        (size,) = struct.unpack("<Q", fh.read(8))
        header = json.loads(fh.read(size))
    return 8 + size, header


class ActivationStore(torch.utils.data.Dataset):
    """Map-style dataset over a store folder: rows ``{"activations": [D] float32, "labels": [C] float32}``.

    Shards are memory-mapped read-only on first use (per process, so DataLoader workers open their own maps).
    :meth:`__getitems__` gathers a whole batch with one fancy index per shard (what ``DataLoader`` and
    ``transformers.Trainer`` call), converting float16 storage to float32, and drops each shard's mapped pages from
    this process once its rows are copied, so the resident memory stays below one shard plus the batch.

    Args:
        directory: a folder written by :class:`ActivationWriter` (or :func:`~hf_ext.scar.build_activation_dataset`
            with ``output_dir``).

    Raises:
        FileNotFoundError: no store in ``directory`` (or a shard is missing).
        ValueError: a shard does not match the index (truncated or replaced file).
    """

    def __init__(self, directory: str | os.PathLike) -> None:
        self.directory = Path(directory)
        index_path = self.directory / INDEX_NAME
        if not index_path.is_file():
            raise FileNotFoundError(f"no activation store in {str(self.directory)!r} (missing {INDEX_NAME}; an "
                                    "interrupted cache is incomplete: rebuild it)")
        self.index = json.loads(index_path.read_text(encoding="utf-8"))
        if self.index.get("format") != _FORMAT:
            raise ValueError(f"{index_path} has format {self.index.get('format')!r}; this hf_ext reads format {_FORMAT}")
        self.n_inputs, self.num_concepts = int(self.index["n_inputs"]), int(self.index["num_concepts"])
        self.storage_dtype = self.index["storage_dtype"]
        rows = [int(s["rows"]) for s in self.index["shards"]]
        self._starts = np.concatenate([[0], np.cumsum(rows)]).astype(np.int64)
        self._layouts = [self._check_shard(s) for s in self.index["shards"]]
        self._maps: dict[int, tuple[mmap.mmap, dict[str, np.ndarray]]] = {}

    def _check_shard(self, shard: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        path = self.directory / shard["file"]
        if not path.is_file():
            raise FileNotFoundError(f"activation store shard {str(path)!r} is missing")
        start, header = _safetensors_layout(path)
        n = int(shard["rows"])
        want = {"activations": [n, self.n_inputs], "labels": [n, self.num_concepts], "sequence_id": [n]}
        got = {k: header.get(k, {}).get("shape") for k in want}
        if got != want or start + max(v["data_offsets"][1] for k, v in header.items() if k in want) > path.stat().st_size:
            raise ValueError(f"shard {str(path)!r} does not match {INDEX_NAME}: expected shapes {want}, found {got} "
                             "(or a truncated file)")
        return start, header

    # ----------------------------------------------------------------------------------------------- access
    def __len__(self) -> int:
        return int(self._starts[-1])

    @property
    def num_shards(self) -> int:
        return len(self._layouts)

    @property
    def nbytes(self) -> int:
        """Bytes of stored activations (what the in-memory cache would hold)."""
        return len(self) * self.n_inputs * np.dtype(_NP[self.storage_dtype]).itemsize

    def _arrays(self, shard: int) -> dict[str, np.ndarray]:
        if shard not in self._maps:
            start, header = self._layouts[shard]
            with open(self.directory / self.index["shards"][shard]["file"], "rb") as fh:
                mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
            arrays = {}
            for key in ("activations", "labels", "sequence_id"):
                info = header[key]
                lo, hi = info["data_offsets"]
                dtype = _ST[info["dtype"]]
                arrays[key] = np.frombuffer(mm, dtype=dtype, count=(hi - lo) // np.dtype(dtype).itemsize,
                                            offset=start + lo).reshape(info["shape"])
            self._maps[shard] = (mm, arrays)
        return self._maps[shard][1]

    def release(self, shard: int | None = None) -> None:
        """Drop the mapped pages of ``shard`` (default: every shard) from this process's resident memory; the data
        stays on disk and in the page cache."""
        for index in ([shard] if shard is not None else list(self._maps)):
            if index not in self._maps:
                continue
            mm = self._maps[index][0]
            if hasattr(mm, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
                mm.madvise(mmap.MADV_DONTNEED)
            else:  # no madvise (Windows): unmapping releases the pages; the map reopens on the next read
                del self._maps[index]
                mm.close()

    def _gather(self, rows: np.ndarray, keys: dict[str, tuple[int, Any]]) -> dict[str, np.ndarray]:
        """``{key: values of rows}`` for ``keys = {name: (width or 0, dtype)}``, shard by shard, releasing each."""
        out = {k: np.empty((len(rows), width) if width else (len(rows),), dtype=dtype)
               for k, (width, dtype) in keys.items()}
        shard_of = np.searchsorted(self._starts, rows, side="right") - 1
        for shard in np.unique(shard_of):
            where = np.nonzero(shard_of == shard)[0]
            local = rows[where] - self._starts[shard]
            arrays = self._arrays(int(shard))
            for key in keys:
                out[key][where] = arrays[key][local]
            self.release(int(shard))
        return out

    def _rows(self, indices: Any) -> np.ndarray:
        rows = np.asarray(indices, dtype=np.int64).reshape(-1)
        n = len(self)
        if rows.size and (rows.min() < -n or rows.max() >= n):
            bad = rows[(rows < -n) | (rows >= n)][0]
            raise IndexError(f"row {int(bad)} is out of range for an activation store of {n} rows")
        return np.where(rows < 0, rows + n, rows)

    def __getitems__(self, indices: Any) -> dict[str, torch.Tensor]:
        """A batch: ``{"activations": [B, D] float32, "labels": [B, C] float32}`` for row ``indices``."""
        got = self._gather(self._rows(indices), {"activations": (self.n_inputs, np.float32),
                                                 "labels": (self.num_concepts, np.float32)})
        return {"activations": torch.from_numpy(got["activations"]), "labels": torch.from_numpy(got["labels"])}

    def __getitem__(self, index: Any) -> dict[str, torch.Tensor]:
        if isinstance(index, (int, np.integer)):
            batch = self.__getitems__([int(index)])
            return {k: v[0] for k, v in batch.items()}
        return self.__getitems__(index)

    def sequence_ids(self) -> torch.Tensor:
        """``[N]`` int64: the text each row came from."""
        return torch.from_numpy(self._gather(np.arange(len(self)), {"sequence_id": (0, np.int64)})["sequence_id"])

    def to_tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Everything in memory: ``(activations [N, D] float32, labels [N, C] float32)`` (the in-memory path), filled
        shard by shard with the pages released in between, so the peak is the result plus one shard."""
        acts = np.empty((len(self), self.n_inputs), dtype=np.float32)
        labels = np.empty((len(self), self.num_concepts), dtype=np.float32)
        for shard in range(self.num_shards):
            lo, hi = self._starts[shard], self._starts[shard + 1]
            arrays = self._arrays(shard)
            acts[lo:hi] = arrays["activations"]
            labels[lo:hi] = arrays["labels"]
            self.release(shard)
        return torch.from_numpy(acts), torch.from_numpy(labels)

    def __getstate__(self) -> dict[str, Any]:  # DataLoader workers: maps are per process, reopened on first read
        state = dict(self.__dict__)
        state["_maps"] = {}
        return state

    def __repr__(self) -> str:
        return (f"ActivationStore({str(self.directory)!r}, rows={len(self)}, n_inputs={self.n_inputs}, "
                f"num_concepts={self.num_concepts}, storage_dtype={self.storage_dtype!r}, shards={self.num_shards})")
