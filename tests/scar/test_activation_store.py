"""SCAR activations streamed to disk: the store round trip, caching into it, and training on it = training in memory."""

from __future__ import annotations

import sys

import pytest
import torch
from safetensors.torch import load_file

from hf_ext.scar import ScarAdapter, ScarConfig, build_activation_dataset, train_scar
from hf_ext.scar.activation_store import INDEX_NAME, ActivationStore, ActivationWriter, is_activation_store
from hf_ext.scar.training import accelerate_train
from hf_ext.testing import tiny_causal_lm, tiny_tokenizer


def _rows(n=50, d=6, c=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g), (torch.rand(n, c, generator=g) < 0.4).float(), torch.arange(n) * 3


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_writer_and_store_round_trip_across_shards(tmp_path, dtype):
    acts, labels, seq = _rows()
    with ActivationWriter(tmp_path, n_inputs=6, num_concepts=2, storage_dtype=dtype, shard_mb=8 * 6 * 4 / 2**20) as w:
        for lo in range(0, 50, 7):  # uneven writes: shard boundaries fall inside writes
            w.write(acts[lo:lo + 7], labels[lo:lo + 7], seq[lo:lo + 7])
    store = ActivationStore(tmp_path)
    assert is_activation_store(tmp_path) and len(store) == 50 and store.num_shards >= 3
    expect = acts if dtype == "float32" else acts.half().float()
    order = torch.randperm(50, generator=torch.Generator().manual_seed(1)).tolist()
    batch = store[order]  # spans every shard, in the requested order
    assert batch["activations"].dtype == torch.float32
    assert torch.equal(batch["activations"], expect[order]) and torch.equal(batch["labels"], labels[order])
    assert torch.equal(store[-1]["activations"], expect[-1])
    assert torch.equal(store.sequence_ids(), seq)
    full_acts, full_labels = store.to_tensors()
    assert torch.equal(full_acts, expect) and torch.equal(full_labels, labels)
    first = load_file(str(tmp_path / "shard-00000.safetensors"))  # plain safetensors shards
    assert set(first) == {"activations", "labels", "sequence_id"} and str(first["activations"].dtype).endswith(dtype)
    with pytest.raises(IndexError, match="out of range"):
        store[[0, 50]]
    from hf_ext.scar.training import _collate_activations

    loader = torch.utils.data.DataLoader(store, batch_size=8, num_workers=2, collate_fn=_collate_activations)
    batches = list(loader)  # worker processes open their own maps
    assert torch.equal(torch.cat([b["activations"] for b in batches]), expect)


def test_store_errors(tmp_path):
    acts, labels, seq = _rows(10)
    with pytest.raises(ValueError, match="storage_dtype"):
        ActivationWriter(tmp_path, n_inputs=6, num_concepts=2, storage_dtype="bfloat16")
    with pytest.raises(ValueError, match="n_inputs"):
        ActivationWriter(tmp_path, n_inputs=0, num_concepts=2)
    w = ActivationWriter(tmp_path, n_inputs=6, num_concepts=2)
    with pytest.raises(ValueError, match=r"activations must be \[n, 6\]"):
        w.write(acts[:, :5], labels, seq)
    with pytest.raises(ValueError, match="labels must be"):
        w.write(acts, labels[:5], seq)
    w.write(acts, labels, seq)
    w.close()
    with pytest.raises(ValueError, match="already holds an activation store"):
        ActivationWriter(tmp_path, n_inputs=6, num_concepts=2)
    with ActivationWriter(tmp_path, n_inputs=6, num_concepts=2, overwrite=True) as w:
        w.write(acts[:4], labels[:4], seq[:4])
    assert len(ActivationStore(tmp_path)) == 4
    with pytest.raises(FileNotFoundError, match="no activation store"):
        ActivationStore(tmp_path / "nowhere")
    shard = tmp_path / "shard-00000.safetensors"
    shard.write_bytes(shard.read_bytes()[:-40])  # truncated
    with pytest.raises(ValueError, match="does not match"):
        ActivationStore(tmp_path)
    with pytest.raises(ValueError, match="no activations were written"):
        ActivationWriter(tmp_path / "empty", n_inputs=6, num_concepts=2).close()
    with pytest.raises(RuntimeError):  # an interrupted cache leaves no index behind
        with ActivationWriter(tmp_path / "broken", n_inputs=6, num_concepts=2, shard_mb=1e-4) as w:
            w.write(acts, labels, seq)
            raise RuntimeError("interrupted")
    assert not (tmp_path / "broken" / INDEX_NAME).exists()


@pytest.mark.parametrize("family,dtype", [("llama", "float32"), ("gpt2", "float16"), ("gpt_neox", "float32")])
def test_caching_to_disk_gives_the_in_memory_rows(tmp_path, family, dtype):
    model, tok = tiny_causal_lm(family, seed=0), tiny_tokenizer()
    texts = ["the cat sat on the mat", "a b c d e f g", "hello world", "x y"]
    scar = ScarAdapter.for_model(model, layer=1, concepts=["x", "y"]).attach(model)
    labels = [[1, 0], [0, 1], [-1, 1], [0, 0]]
    kw = dict(adapter=scar, batch_size=3, storage_dtype=dtype, progress=False)
    memory = build_activation_dataset(model, tok, texts, labels, **kw)[:]
    store = build_activation_dataset(model, tok, texts, labels, output_dir=tmp_path, shard_mb=1e-3, **kw)
    scar.detach()
    assert isinstance(store, ActivationStore) and len(store) == len(memory["sequence_id"]) and store.num_shards > 1
    rows = store[list(range(len(store)))]
    assert torch.equal(rows["activations"], memory["activations"].float())
    assert torch.equal(rows["labels"], memory["labels"].float())
    assert torch.equal(store.sequence_ids(), memory["sequence_id"])
    with pytest.raises(ValueError, match="already holds"):
        build_activation_dataset(model, tok, texts, labels, layer=0, output_dir=tmp_path, progress=False)


@pytest.mark.parametrize("seed", [0, 3])
def test_training_on_the_store_equals_training_in_memory(tmp_path, seed):
    """Trainer (shuffled batches) and the Accelerate loop: streamed and in-memory data give equal losses and weights."""
    from hf_ext.scar.training import synthetic_activations

    ds = synthetic_activations(300, 8, num_concepts=2, seed=seed)
    with ActivationWriter(tmp_path, n_inputs=8, num_concepts=2, shard_mb=40 * 8 * 4 / 2**20) as w:
        cols = ds[:]
        w.write(cols["activations"], cols["labels"], torch.arange(300))
    store = ActivationStore(tmp_path)
    cfg = ScarConfig(n_inputs=8, n_latents=32, k=4, concepts=["a", "b"], pos_grad_scale=2.0)
    results = []
    for data in (ds, store):
        adapter = ScarAdapter(cfg, seed=seed)
        _, log = train_scar(adapter, data, epochs=2, batch_size=64, lr=1e-2, seed=seed, logging_steps=1,
                            progress=False)
        results.append(([r["loss"] for r in log if "loss" in r], adapter.state_dict()))
    (mem_losses, mem_w), (disk_losses, disk_w) = results
    assert len(mem_losses) == 10 and mem_losses == disk_losses
    assert all(torch.equal(mem_w[k], disk_w[k]) for k in mem_w)
    assert not torch.equal(mem_w["encoder.weight"], ScarAdapter(cfg, seed=seed).encoder.weight)  # it trained
    a, b = ScarAdapter(cfg, seed=seed), ScarAdapter(cfg, seed=seed)
    assert accelerate_train(a, ds, batch_size=64, lr=1e-2, progress=False) == \
        accelerate_train(b, store, batch_size=64, lr=1e-2, progress=False)
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in mem_w)


def _mapped_kib(folder) -> int:
    """Resident KiB of this process's mappings of files under ``folder`` (/proc/self/smaps)."""
    total, current = 0, None
    with open("/proc/self/smaps", encoding="ascii", errors="replace") as fh:
        for line in fh:
            fields = line.split()
            if "-" in fields[0] and not fields[0].endswith(":"):
                current = fields[5] if len(fields) >= 6 else ""
            elif fields[0] == "Rss:" and current and current.startswith(str(folder)):
                total += int(fields[1])
    return total


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/self/smaps")
def test_a_shuffled_epoch_keeps_at_most_one_shard_mapped(tmp_path, monkeypatch):
    """48 MiB in 8 MiB shards, read in shuffled batches: the mapped pages never exceed one shard (measured just
    before each release); with releases disabled the same epoch maps the whole store."""
    width = 64
    rows = 48 * 2**20 // (width * 4)
    with ActivationWriter(tmp_path, n_inputs=width, num_concepts=1, shard_mb=8) as w:
        for lo in range(0, rows, 65536):
            n = min(65536, rows - lo)
            w.write(torch.ones(n, width), torch.zeros(n, 1), torch.arange(n))
    order = torch.randperm(rows, generator=torch.Generator().manual_seed(0))

    def epoch(store):
        for lo in range(0, rows, 4096):
            store[order[lo:lo + 4096].tolist()]

    store, seen = ActivationStore(tmp_path), []
    original = store.release
    monkeypatch.setattr(store, "release", lambda shard=None: (seen.append(_mapped_kib(tmp_path)), original(shard)))
    epoch(store)
    assert store.num_shards == 6 and 0 < max(seen) <= 8 * 1024 + 512, max(seen)
    assert _mapped_kib(tmp_path) == 0
    unreleased = ActivationStore(tmp_path)
    monkeypatch.setattr(unreleased, "release", lambda shard=None: None)
    epoch(unreleased)
    assert _mapped_kib(tmp_path) > 40 * 1024  # the whole store: the release is what bounds memory
