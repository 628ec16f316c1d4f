"""hf_ext.utils.saving: staged writes, the manifest written last, and verify_manifest's clear errors."""

from __future__ import annotations

import json
import os

import pytest

from hf_ext.utils import saving
from hf_ext.utils.saving import (
    MANIFEST_NAME,
    ArtifactIntegrityError,
    atomic_directory,
    atomic_file,
    atomic_write_text,
    verify_manifest,
)


def _write(folder, files):
    for rel, data in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)


def test_new_folder_appears_whole_with_a_manifest(tmp_path):
    target = tmp_path / "a" / "b"
    with atomic_directory(target) as staging:
        _write(staging, {"w.bin": b"1234", "sub/c.json": b"{}"})
        assert not target.exists()  # nothing visible until the block ends
    manifest = verify_manifest(target)
    assert sorted(manifest["files"]) == ["sub/c.json", "w.bin"] and manifest["files"]["w.bin"]["size"] == 4
    assert manifest["format_version"] == saving.MANIFEST_FORMAT and manifest["complete"] is True
    assert sorted(p.name for p in tmp_path.joinpath("a").iterdir()) == ["b"]  # no staging folder left


def test_existing_folder_keeps_foreign_files_and_prune_removes_only_our_stale_ones(tmp_path):
    target = tmp_path / "t"
    with atomic_directory(target) as staging:
        _write(staging, {"old.bin": b"old", "shared.json": b"1"})
    (target / "notes.txt").write_text("mine")
    with atomic_directory(target) as staging:  # merge: old.bin stays listed
        _write(staging, {"shared.json": b"22"})
    assert sorted(verify_manifest(target)["files"]) == ["old.bin", "shared.json"]
    with atomic_directory(target, prune=True) as staging:
        _write(staging, {"shared.json": b"333"})
    assert sorted(p.name for p in target.iterdir()) == [MANIFEST_NAME, "notes.txt", "shared.json"]
    assert (target / "shared.json").read_bytes() == b"333" and (target / "notes.txt").read_text() == "mine"


def test_a_failing_writer_leaves_the_old_folder_untouched(tmp_path):
    target = tmp_path / "t"
    with atomic_directory(target) as staging:
        _write(staging, {"w.bin": b"A"})
    with pytest.raises(RuntimeError, match="disk"):
        with atomic_directory(target) as staging:
            _write(staging, {"w.bin": b"BB"})
            raise RuntimeError("disk full")
    assert (target / "w.bin").read_bytes() == b"A" and verify_manifest(target) is not None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t"]


def test_a_crash_between_renames_is_a_clear_error_not_a_mix(tmp_path, monkeypatch):
    target = tmp_path / "t"
    with atomic_directory(target) as staging:
        _write(staging, {"a.bin": b"A1", "b.bin": b"A2"})
    real_replace, calls = os.replace, []

    def crash_on_second_data_file(src, dst):
        if not str(dst).endswith(MANIFEST_NAME):
            calls.append(dst)
            if len(calls) == 2:
                raise OSError("killed")
        return real_replace(src, dst)

    monkeypatch.setattr(saving.os, "replace", crash_on_second_data_file)
    with pytest.raises(OSError, match="killed"):
        with atomic_directory(target) as staging:
            _write(staging, {"a.bin": b"B1", "b.bin": b"B2"})
    monkeypatch.undo()
    assert (target / "a.bin").read_bytes() == b"B1" and (target / "b.bin").read_bytes() == b"A2"  # a mix on disk
    with pytest.raises(ArtifactIntegrityError, match="interrupted save") as err:
        verify_manifest(target)
    assert str(target) in str(err.value)


@pytest.mark.parametrize("change, match", [
    (lambda t: (t / "w.bin").write_bytes(b"XXXX"), "'w.bin' does not match the sha256"),
    (lambda t: (t / "w.bin").write_bytes(b"longer"), "'w.bin' has 6 bytes"),
    (lambda t: (t / "w.bin").unlink(), "'w.bin' is listed .* but missing"),
    (lambda t: (t / MANIFEST_NAME).write_text("{trunc"), "unreadable"),
    (lambda t: (t / MANIFEST_NAME).write_text(json.dumps({"format": "other"})), "not an hf_ext manifest"),
    (lambda t: (t / MANIFEST_NAME).write_text(json.dumps({"format": "hf_ext.manifest", "format_version": 99,
                                                         "files": {}})), "upgrade hf-ext"),
])
def test_verify_manifest_names_the_file(tmp_path, change, match):
    target = tmp_path / "t"
    with atomic_directory(target) as staging:
        _write(staging, {"w.bin": b"1234"})
    change(target)
    with pytest.raises(ArtifactIntegrityError, match=match):
        verify_manifest(target)


def test_size_only_check_when_hashing_is_off(tmp_path, monkeypatch):
    target = tmp_path / "t"
    with atomic_directory(target) as staging:
        _write(staging, {"w.bin": b"1234"})
    (target / "w.bin").write_bytes(b"9999")
    monkeypatch.setenv("HF_EXT_VERIFY_HASHES", "0")
    assert verify_manifest(target) is not None
    with pytest.raises(ArtifactIntegrityError):
        verify_manifest(target, hashes=True)


def test_no_manifest_passes_and_bad_targets_are_refused(tmp_path):
    assert verify_manifest(tmp_path) is None
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError, match="not a folder"):
        with atomic_directory(tmp_path / "file"):
            pass
    for bad in ("", "."):
        with pytest.raises(ValueError, match="must name a folder"):
            with atomic_directory(bad):
                pass


def test_atomic_file_replaces_in_one_step(tmp_path):
    path = tmp_path / "plan.json"
    atomic_write_text(path, "old")
    with pytest.raises(RuntimeError):
        with atomic_file(path) as tmp:
            tmp.write_text("half")
            raise RuntimeError
    assert path.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["plan.json"]
    with pytest.raises(IsADirectoryError):
        atomic_write_text(tmp_path, "x")
