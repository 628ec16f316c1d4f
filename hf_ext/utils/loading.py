"""Strict reading of saved artifacts: every missing file, missing key or damaged file names itself and its path.

Used by every hf_ext loader instead of ``json.loads(path.read_text())`` / ``safetensors.*.load_file`` so that a
truncated file gives ``ArtifactError: /x/adapter_model.safetensors is not a readable safetensors file (invalid
header length) …`` instead of a bare ``SafetensorError``, and a config without a required key is refused instead
of loading with defaults.

Example:
    >>> import json, tempfile
    >>> from pathlib import Path
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     p = Path(tmp) / "config.json"
    ...     _ = p.write_text(json.dumps({"k": 4}))
    ...     cfg = read_json(p, required=("k",))
    ...     require_keys(cfg, ("k", "layer"), p)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    hf_ext.utils.loading.ArtifactError: .../config.json lacks the required key 'layer' (it has ['k']); ...
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

__all__ = ["ArtifactError", "load_safetensors", "read_json", "require_file", "require_keys"]


class ArtifactError(ValueError):
    """A saved artifact that exists but cannot be used: damaged, of another format, or missing a required key."""


def require_file(path: str | os.PathLike, what: str = "file") -> Path:
    """``path`` as a ``Path`` if it is a file, else ``FileNotFoundError`` naming ``what`` and the path.

    Example:
        >>> require_file("/no/such/words.json", "the T-FREE word dictionary")
        Traceback (most recent call last):
        ...
        FileNotFoundError: the T-FREE word dictionary is missing: '/no/such/words.json' does not exist
    """
    path = Path(path)
    if not path.is_file():
        reason = "is a directory" if path.is_dir() else "does not exist"
        raise FileNotFoundError(f"{what} is missing: {str(path)!r} {reason}")
    return path


def require_keys(mapping: Mapping[str, Any], keys: Iterable[str], path: str | os.PathLike) -> None:
    """Raise :class:`ArtifactError` naming the first of ``keys`` that ``mapping`` (read from ``path``) lacks."""
    for key in keys:
        if key not in mapping:
            raise ArtifactError(f"{path} lacks the required key {key!r} (it has {sorted(mapping)}); the file is "
                                "incomplete or was not written by this library: save the artifact again")


def read_json(path: str | os.PathLike, *, required: Iterable[str] = (), what: str = "file") -> Any:
    """Parse a JSON file strictly.

    Args:
        path: the file.
        required: keys the top-level object must have (:func:`require_keys`).
        what: how to call the file in the "missing" message.

    Raises:
        FileNotFoundError: no such file. ArtifactError: not valid UTF-8 JSON, not an object while ``required`` is
        given, or a required key missing.
    """
    path = require_file(path, what)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ArtifactError(f"{path} is not a valid JSON file ({err}); it is damaged or truncated: save it again") \
            from err
    required = tuple(required)
    if required:
        if not isinstance(data, dict):
            raise ArtifactError(f"{path} must hold a JSON object, got {type(data).__name__}")
        require_keys(data, required, path)
    return data


def load_safetensors(path: str | os.PathLike, *, framework: str = "pt", device: str = "cpu",
                     what: str = "weights file") -> dict[str, Any]:
    """``safetensors.{torch,numpy}.load_file`` with the path in every error.

    Args:
        path: the ``.safetensors`` file.
        framework: ``"pt"`` (torch tensors) or ``"np"`` (numpy arrays).
        device: torch device for ``"pt"``.
        what: how to call the file in the "missing" message.

    Raises:
        FileNotFoundError: no such file. ArtifactError: a truncated or otherwise unreadable file.
    """
    path = require_file(path, what)
    try:
        if framework == "np":
            from safetensors.numpy import load_file

            return load_file(str(path))
        from safetensors.torch import load_file

        return load_file(str(path), device=device)
    except FileNotFoundError:
        raise
    except Exception as err:  # noqa: BLE001 - SafetensorError and the OSError/RuntimeError of damaged files
        raise ArtifactError(f"{path} is not a readable safetensors file ({type(err).__name__}: {err}); it is "
                            "damaged or truncated: save or download it again") from err
