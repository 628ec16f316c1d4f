"""Safe saves: an interrupted save leaves the old artifact or the new one, never a silent mix of both.

Every artifact hf_ext writes goes through :func:`atomic_directory` (a folder) or :func:`atomic_file` (one file):

* the writer fills an empty *staging* folder, a hidden sibling of the target (``.<name>.hf_ext-tmp-<uuid>``, so it
  is on the same file system and a rename is atomic); this is where the bytes are written, so a full disk, a file
  size limit or a kill in the middle leaves the target untouched;
* a **new** target: :data:`MANIFEST_NAME` (per-file sha256 and size, format version) is added to the staging
  folder, which is then renamed into place in one step;
* an **existing** target: its manifest is first replaced by an *incomplete* marker, the staged files are renamed
  over the old ones one by one (renames write no data), and the manifest listing the files is written last.
  Files in the folder that the save did not write are left alone (they stay listed if an earlier hf_ext save
  listed them).

Loaders call :func:`verify_manifest` first: no manifest (a folder written by something else, or before hf_ext
0.2.0) passes; an incomplete marker or a file whose size or sha256 differs from the manifest raises
:class:`ArtifactIntegrityError` naming the file. Set ``HF_EXT_VERIFY_HASHES=0`` to check sizes only (for very large
checkpoints, where hashing every file on every load costs seconds per GB).

Example:
    >>> import tempfile, pathlib
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     target = pathlib.Path(tmp, "artifact")
    ...     with atomic_directory(target) as staging:
    ...         _ = (staging / "weights.bin").write_bytes(b"new")
    ...     sorted(p.name for p in target.iterdir()), sorted(verify_manifest(target)["files"])
    (['hf_ext_manifest.json', 'weights.bin'], ['weights.bin'])
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["MANIFEST_FORMAT", "MANIFEST_NAME", "ArtifactIntegrityError", "AtomicSaveMixin", "atomic_directory",
           "atomic_file", "atomic_write_text", "local_folder", "verify_manifest"]

#: File name of the manifest hf_ext writes last into every saved folder.
MANIFEST_NAME = "hf_ext_manifest.json"
#: Version of the manifest layout; a newer one is refused with an "upgrade hf-ext" message.
MANIFEST_FORMAT = 1
_TMP_TAG = ".hf_ext-tmp-"
_CHUNK = 1 << 20


class ArtifactIntegrityError(ValueError):
    """A saved folder is incomplete or mixed: its files do not match its ``hf_ext_manifest.json`` (an interrupted
    save, or files changed afterwards). The message names the folder and the file."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _files(root: Path) -> list[str]:
    """Relative POSIX paths of the regular files under ``root`` (the manifest excluded), sorted."""
    out = []
    for dirpath, _, names in os.walk(root):
        for name in names:
            rel = Path(dirpath, name).relative_to(root).as_posix()
            if rel != MANIFEST_NAME:
                out.append(rel)
    return sorted(out)


def _entries(root: Path, names: list[str]) -> dict[str, dict[str, Any]]:
    return {rel: {"sha256": _sha256(root / rel), "size": (root / rel).stat().st_size} for rel in names}


def _write_json_atomically(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}{_TMP_TAG}{uuid.uuid4().hex}")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1, sort_keys=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _manifest(files: dict[str, dict[str, Any]], *, complete: bool = True) -> dict[str, Any]:
    return {"format": "hf_ext.manifest", "format_version": MANIFEST_FORMAT, "complete": complete, "files": files}


def _read_manifest(folder: Path) -> dict[str, Any] | None:
    path = folder / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ArtifactIntegrityError(f"{path} is unreadable ({err}); the save of {folder} was interrupted: save "
                                     "the artifact again (or delete the manifest to accept the files as they are)") from err
    if not isinstance(data, dict) or data.get("format") != "hf_ext.manifest" or not isinstance(data.get("files"), dict):
        raise ArtifactIntegrityError(f"{path} is not an hf_ext manifest (expected format 'hf_ext.manifest' and a "
                                     f"'files' mapping)")
    if int(data.get("format_version", 0)) > MANIFEST_FORMAT:
        raise ArtifactIntegrityError(f"{path} has format_version {data['format_version']}; this hf_ext reads up to "
                                     f"{MANIFEST_FORMAT}: upgrade hf-ext")
    return data


def _staging_path(target: Path) -> Path:
    return target.with_name(f".{target.name}{_TMP_TAG}{uuid.uuid4().hex}")


def _check_target(target: Path) -> Path:
    if str(target) in ("", "."):
        raise ValueError(f"save path must name a folder, got {str(target)!r}")
    target = target.expanduser()
    if target.exists() and not target.is_dir():
        raise FileExistsError(f"save path {str(target)!r} exists and is not a folder")
    return target


def _merge_into(staging: Path, target: Path, prune: bool) -> None:
    """Move the staged files over an existing folder: incomplete marker, renames, then the manifest (then, with
    ``prune``, the previous save's files that this one did not write)."""
    new_files = _files(staging)
    entries = _entries(staging, new_files)
    old = _read_manifest(target)
    previous = [rel for rel in (old or {}).get("files", {}) if rel not in entries and (target / rel).is_file()]
    kept = {} if prune or not (old or {}).get("complete", False) else {rel: old["files"][rel] for rel in previous}
    _write_json_atomically(target / MANIFEST_NAME, _manifest({}, complete=False))
    for rel in new_files:
        dest = target / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        if dest.is_dir() and not dest.is_symlink():
            raise FileExistsError(f"cannot save {rel!r} into {target}: a folder of that name is in the way")
        os.replace(staging / rel, dest)
    _write_json_atomically(target / MANIFEST_NAME, _manifest({**kept, **entries}))
    if prune:
        for rel in previous:
            (target / rel).unlink(missing_ok=True)
            parent = (target / rel).parent
            if parent != target:
                with contextlib.suppress(OSError):  # an emptied sub-folder of the old artifact goes too
                    parent.rmdir()


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike, *, prune: bool = False) -> Iterator[Path]:
    """Yield an empty staging folder; on a clean exit its files become ``path`` (see the module doc).

    Args:
        path: the folder to create or update (its parents are created). An existing *file* there is an error.
        prune: the save writes a whole artifact: files that the folder's previous hf_ext save listed and this one
            did not write are deleted (never files no hf_ext manifest listed). Default ``False``: they stay, still
            listed (a model and its tokenizer saved one after the other into one folder).

    Yields:
        The staging folder to write into (a hidden sibling of ``path``).

    Raises:
        ValueError: ``path`` is empty or ``"."``-like. FileExistsError: ``path`` is a file.
        Whatever the writer raised: the staging folder is removed and ``path`` is unchanged.
    """
    target = _check_target(Path(path))
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = _staging_path(target)
    staging.mkdir()
    try:
        yield staging
        if not target.exists():
            _write_json_atomically(staging / MANIFEST_NAME, _manifest(_entries(staging, _files(staging))))
            try:
                os.rename(staging, target)
                return
            except OSError:
                if not target.is_dir():  # not a concurrent writer: a real failure
                    raise
            (staging / MANIFEST_NAME).unlink()
        _merge_into(staging, target, prune)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on a clean exit it replaces ``path`` in one rename.

    For single-file artifacts (a plan, a JSON result); a reader sees the old file or the new one.
    """
    target = Path(path).expanduser()
    if target.is_dir():
        raise IsADirectoryError(f"save path {str(target)!r} is a folder; expected a file path")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}{_TMP_TAG}{uuid.uuid4().hex}")
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` through :func:`atomic_file`; returns the path."""
    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding=encoding)
    return Path(path).expanduser()


def verify_manifest(path: str | os.PathLike, *, hashes: bool | None = None) -> dict[str, Any] | None:
    """Check a saved folder against its manifest; returns the manifest (``None`` if the folder has none).

    Args:
        path: the folder (a file path checks its parent folder).
        hashes: compare sha256 as well as sizes (default: yes, unless ``HF_EXT_VERIFY_HASHES=0``).

    Raises:
        ArtifactIntegrityError: an interrupted save (incomplete marker or unreadable manifest), a listed file that is
            missing, or one whose size or sha256 differs; the message names the file.
    """
    folder = Path(path).expanduser()
    if folder.is_file():
        folder = folder.parent
    if not folder.is_dir():
        return None
    manifest = _read_manifest(folder)
    if manifest is None:
        return None
    if not manifest.get("complete", False):
        raise ArtifactIntegrityError(f"{folder} holds an interrupted save ({MANIFEST_NAME} marks it incomplete): its "
                                     "files may mix two versions; save the artifact again")
    if hashes is None:
        hashes = os.environ.get("HF_EXT_VERIFY_HASHES", "1").strip().lower() not in ("0", "false", "no", "off")
    for rel, entry in manifest["files"].items():
        file = folder / rel
        if not file.is_file():
            raise ArtifactIntegrityError(f"{folder}: {rel!r} is listed in {MANIFEST_NAME} but missing; the save was "
                                         "interrupted or the file was removed")
        size = file.stat().st_size
        if size != entry.get("size"):
            raise ArtifactIntegrityError(f"{folder}: {rel!r} has {size} bytes, {MANIFEST_NAME} says {entry.get('size')}"
                                         ": an interrupted save mixed two versions, or the file was changed after "
                                         "saving (save again, or delete the manifest to accept it)")
        if hashes and _sha256(file) != entry.get("sha256"):
            raise ArtifactIntegrityError(f"{folder}: {rel!r} does not match the sha256 in {MANIFEST_NAME}: an "
                                         "interrupted save mixed two versions, or the file was changed after saving "
                                         "(save again, or delete the manifest to accept it)")
    return manifest


def local_folder(name_or_path: Any, subfolder: str | None = None) -> Path | None:
    """``name_or_path`` (plus ``subfolder``) as a local folder if it is one, else ``None`` (e.g. a Hub id)."""
    if not isinstance(name_or_path, str | os.PathLike):
        return None
    folder = Path(name_or_path).expanduser()
    if subfolder:
        folder = folder / subfolder
    return folder if folder.is_dir() else None


def _relocate(value: Any, staging: Path, target: Path) -> Any:
    """Map paths under ``staging`` in a ``save_pretrained`` return value to ``target``."""
    if isinstance(value, tuple | list):
        return type(value)(_relocate(v, staging, target) for v in value)
    if isinstance(value, str | os.PathLike):
        p = Path(value)
        try:
            rel = p.relative_to(staging)
        except ValueError:
            return value
        moved = target / rel
        return str(moved) if isinstance(value, str) else moved
    return value


class AtomicSaveMixin:
    """Put before a transformers / diffusers class: ``save_pretrained`` writes through :func:`atomic_directory`
    and ``from_pretrained`` on a local folder runs :func:`verify_manifest` first.

    ``save_pretrained(..., push_to_hub=True)`` uploads the staged files as usual.
    """

    def save_pretrained(self, save_directory: str | os.PathLike, *args: Any, **kwargs: Any) -> Any:
        """The parent's ``save_pretrained`` into a staging folder, moved into ``save_directory`` atomically with a
        manifest written last (:func:`atomic_directory`); returns what the parent returns."""
        target = Path(save_directory).expanduser()
        with atomic_directory(target) as staging:
            result = super().save_pretrained(staging, *args, **kwargs)  # type: ignore[misc]
        return _relocate(result, staging, target)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: Any, *args: Any, **kwargs: Any) -> Any:
        """The parent's ``from_pretrained`` after :func:`verify_manifest` on a local folder (an interrupted save
        raises :class:`ArtifactIntegrityError` instead of loading a mix of two saves)."""
        root = local_folder(pretrained_model_name_or_path)
        if root is not None:
            verify_manifest(root)  # a pipeline's manifest lists its sub-folders' files too
            sub = local_folder(pretrained_model_name_or_path, kwargs.get("subfolder"))
            if sub is not None and sub != root:
                verify_manifest(sub)
        return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)  # type: ignore[misc]

