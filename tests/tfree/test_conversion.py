"""The reference-checkpoint converter against synthetic checkpoints in the exact layout of Aleph-Alpha/trigrams.

The checkpoints carry the reference's state-dict names (``transformer.`` prefix, ``embeddings.embedding``,
``attention.query/key/value/dense``, ``mlp.dense_in/swiglu/dense_out``), its JSON-in-YAML configs and random weights;
the oracle is a forward pass written here from the spec's equations (sum of the hashed rows, RMSNorm, attention with
the reference's *interleaved* complex rotary, ``silu(dense_in(x)) * swiglu(x)``), independent of the converter.
"""

from __future__ import annotations

import collections
import json
import math

import pytest
import torch

import hf_ext  # noqa: F401  (Auto-class registration)
from hf_ext.tfree.conversion import (
    check_reference_hash_table,
    convert_reference_checkpoint,
    interleaved_to_half_split,
)
from hf_ext.tfree.hashing import TrigramHasher

TEXT = "The quick brown fox, 42 times: über naïve Hello  world!"


def reference_checkpoint(root, *, h=32, layers=2, heads=4, v=512, m=4, k=0, bias=True, aggregation="sum",
                         normalization=False, mlp_factor=2.5, base=10000, seed=0, tokenizer_pt=None, **arch_overrides):
    """Write a reference-layout checkpoint (``Trainer.save``: transformer/, tokenizer/) with random weights."""
    g = torch.Generator().manual_seed(seed)
    inter = int(h * mlp_factor)
    shapes = {"attention.query": (h, h), "attention.key": (h, h), "attention.value": (h, h),
              "attention.dense": (h, h), "mlp.dense_in": (inter, h), "mlp.swiglu": (inter, h),
              "mlp.dense_out": (h, inter)}
    state = {"transformer.embeddings.embedding.weight": torch.randn(v, h, generator=g) * 0.1,
             "transformer.norm.weight": 1 + 0.1 * torch.randn(h, generator=g),
             "lm_head.weight": torch.randn(v, h, generator=g) / math.sqrt(h)}
    for i in range(layers):
        p = f"transformer.layers.{i}."
        state[p + "input_layernorm.weight"] = 1 + 0.1 * torch.randn(h, generator=g)
        state[p + "post_attention_layernorm.weight"] = 1 + 0.1 * torch.randn(h, generator=g)
        for name, (o, n_in) in shapes.items():
            state[p + name + ".weight"] = torch.randn(o, n_in, generator=g) / math.sqrt(n_in)
            if bias:
                state[p + name + ".bias"] = 0.1 * torch.randn(o, generator=g)
    arch = {"use_flash": True, "embedding_normalization": normalization, "embedding_aggregation": aggregation,
            "norm": "rms", "mlp_type": "swiglu", "init": "pythia", "bias_terms": bias, "vocab_size": v, "hidden_size": h,
            "num_layers": layers, "num_attention_heads": heads, "rotary_embedding_base": base, "sequence_length": 64,
            "mlp_factor": mlp_factor, "precision": "float32", "layernorm_epsilon": 1e-5, "init_std_global_gain": 1.0,
            **arch_overrides}
    tok = {"lowercase": False, "vocab_size": v, "sequence_length": 64, "vocab_population": m,
           "vocab_population_partial_lowercase": k, "do_classic_tokenization": False, "prefix_path_tokenizer_file": "",
           "seed": 42, "initialize": "hash", "entire_words": False, "end_of_text": "<|endoftext|>",
           "word_edge_weight": 1, "cache_dir": None}
    (root / "transformer").mkdir(parents=True)
    (root / "tokenizer").mkdir()
    torch.save(state, root / "transformer" / "transformer.pt")
    (root / "transformer" / "transformer_config.yaml").write_text(json.dumps(arch, indent=4))  # JSON, as the reference
    (root / "tokenizer" / "tokenizer_config.yaml").write_text(json.dumps(tok, indent=4))
    if tokenizer_pt is not None:
        torch.save(tokenizer_pt, root / "tokenizer" / "tokenizer.pt")
    return state, arch


def spec_forward(state, arch, word_ids, m):
    """Logits ``[W, v]`` of the reference architecture (float64), from the spec's equations; ``word_ids``: per word
    its activation ids with multiplicity (``T·m`` of them)."""
    h, heads, eps = arch["hidden_size"], arch["num_attention_heads"], arch["layernorm_epsilon"]
    d = h // heads
    st = {n: t.double() for n, t in state.items()}

    def lin(x, name):
        out = x @ st[name + ".weight"].T
        return out + st[name + ".bias"] if name + ".bias" in st else out

    def rms(x, name):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * st[name]

    emb = st["transformer.embeddings.embedding.weight"]
    rows = []
    for ids in word_ids:  # Σ over the word's trigrams of Σ (or mean) over each trigram's m rows
        e = emb[torch.tensor(ids)].sum(0)
        if arch["embedding_aggregation"] == "mean":
            e = e / m
        if arch["embedding_normalization"]:
            e = e / (len(ids) / m)
        rows.append(e)
    x = torch.stack(rows)
    n = x.shape[0]
    inv_freq = arch["rotary_embedding_base"] ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    angle = torch.outer(torch.arange(n, dtype=torch.float64), inv_freq)
    rot = torch.polar(torch.ones_like(angle), angle)  # [n, d/2]

    def rotate(t):  # interleaved pairs (2i, 2i+1) of each head are one complex number
        c = torch.view_as_complex(t.reshape(n, heads, d // 2, 2).contiguous())
        return torch.view_as_real(c * rot[:, None, :]).reshape(n, heads, d)

    causal = torch.ones(n, n, dtype=torch.bool).tril()
    for i in range(arch["num_layers"]):
        p = f"transformer.layers.{i}."
        a = rms(x, p + "input_layernorm.weight")
        q = rotate(lin(a, p + "attention.query").view(n, heads, d))
        k = rotate(lin(a, p + "attention.key").view(n, heads, d))
        val = lin(a, p + "attention.value").view(n, heads, d)
        scores = torch.einsum("qhd,khd->hqk", q, k) / math.sqrt(d)
        att = scores.masked_fill(~causal, float("-inf")).softmax(-1)
        x = x + lin(torch.einsum("hqk,khd->qhd", att, val).reshape(n, h), p + "attention.dense")
        b = rms(x, p + "post_attention_layernorm.weight")
        x = x + lin(torch.nn.functional.silu(lin(b, p + "mlp.dense_in")) * lin(b, p + "mlp.swiglu"), p + "mlp.dense_out")
    return rms(x, "transformer.norm.weight") @ st["lm_head.weight"].T


@pytest.mark.parametrize("setting", [
    dict(bias=True, aggregation="sum", normalization=False, k=0, heads=4, layers=2),
    dict(bias=False, aggregation="mean", normalization=True, k=2, heads=2, layers=3, base=500, mlp_factor=2.66796875),
], ids=["bias-sum", "nobias-mean-normalised-lowercase"])
def test_converted_logits_equal_the_reference_equations(tmp_path, setting):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    state, arch = reference_checkpoint(tmp_path / "ckpt", **setting)
    out = convert_reference_checkpoint(tmp_path / "ckpt", tmp_path / "out", words=["quick", "fox"])
    model = AutoModelForCausalLM.from_pretrained(out).to(torch.float64).eval()
    tok = AutoTokenizer.from_pretrained(out)
    assert model.config.num_lowercase_activations == setting["k"] and tok.num_lowercase_activations == setting["k"]
    flat = tok.encode_activations([TEXT], format="flat")["activation_ids"][0]
    padded = tok.encode_activations([TEXT], return_tensors="pt")
    with torch.no_grad():
        got = model(**padded, return_activation_logits=True).activation_logits[0]
    want = spec_forward(state, arch, flat, m=4)
    assert got.shape == want.shape == (len(flat), 512)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)  # transformers computes cos/sin in float32
    # the dictionary round trip works on the converted model (generate() over word ids)
    ids = tok(["quick fox"], return_tensors="pt").input_ids
    assert model.generate(ids, max_new_tokens=2, do_sample=False, pad_token_id=1,
                          eos_token_id=None).shape == (1, ids.shape[1] + 2)


def test_rotary_permutation_matches_llama_rotate_half():
    """Interleaved complex rotation of q, then the permutation == the permutation, then Llama's rotate_half."""
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    heads, d, n = 3, 8, 5
    q = torch.randn(n, heads * d, dtype=torch.float64)
    inv = 10000 ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    ang = torch.outer(torch.arange(n, dtype=torch.float64), inv)
    c = torch.view_as_complex(q.view(n, heads, d // 2, 2).contiguous()) * torch.polar(torch.ones_like(ang), ang)[:, None]
    interleaved = torch.view_as_real(c).reshape(n, heads * d)
    perm = interleaved_to_half_split(torch.eye(heads * d, dtype=torch.float64), heads)  # row permutation matrix
    emb = torch.cat([ang, ang], -1)
    half, _ = apply_rotary_pos_emb((q @ perm.T).view(1, n, heads, d).transpose(1, 2), torch.zeros(1, heads, n, d),
                                   emb.cos()[None], emb.sin()[None])
    torch.testing.assert_close(half.transpose(1, 2).reshape(n, heads * d), interleaved @ perm.T)


def test_tokenizer_pt_dictionary_and_hash_table_check(tmp_path):
    words = ["quick", "brown", "fox"]
    counter = collections.Counter({w: 3 for w in words})
    # a table with every row zero (saved as a 1-row view): not the aa_md5 scheme
    bad = torch.zeros(1, 4, dtype=torch.long).expand(256 ** 3, 4)
    reference_checkpoint(tmp_path / "bad", tokenizer_pt={"trigram_to_vocab": bad, "words": words,
                                                         "word_counter_full": counter})
    with pytest.raises(ValueError, match="hash table differs from hf_ext's aa_md5"):
        convert_reference_checkpoint(tmp_path / "bad", tmp_path / "out_bad")
    out = convert_reference_checkpoint(tmp_path / "bad", tmp_path / "out", check_hash_table=False)
    assert json.loads((out / "words.json").read_text())[-3:] == words
    record = json.loads((out / "conversion.json").read_text())
    assert record["hash_table_rows_checked"] == 0 and record["loss_fields_from"] == "7B release defaults"


class _SpecRows:
    """A stand-in for the 256³-row table holding the spec's oracle rows (tfree.md §10, v = 8000, m = 10, k = 0)."""

    rows = {6637600: [764, 1701, 2238, 3605, 5910, 5911, 6000, 6257, 6940, 7616],
            7103816: [454, 612, 1406, 2267, 4027, 4207, 4961, 5719, 6240, 7732],
            7105637: [642, 3129, 3891, 5031, 5302, 6072, 6198, 6907, 7469, 7915],
            7302252: [48, 1355, 1385, 1414, 2760, 4034, 5136, 5938, 6410, 7079],
            2125676: [89, 752, 1275, 1952, 3025, 4846, 5663, 5839, 7114, 7790]}
    shape = (256 ** 3, 10)

    def __getitem__(self, ids):
        return torch.tensor([self.rows[i][::-1] for i in ids.tolist()])  # any order within a row


def test_hash_table_check_accepts_the_spec_rows():
    assert check_reference_hash_table(_SpecRows(), TrigramHasher(8000, 10), words=["Hello"]) == 5
    with pytest.raises(ValueError, match="trigram id"):
        check_reference_hash_table(_SpecRows(), TrigramHasher(8000, 10, 2), words=["Hello"])  # k = 2 changes " He"


def test_context_config_sets_the_loss_fields(tmp_path):
    reference_checkpoint(tmp_path / "ckpt")
    (tmp_path / "ckpt" / "context").mkdir()
    (tmp_path / "ckpt" / "context" / "config.yml").write_text(json.dumps(
        {"training": {"loss_pos_weight": 123.0, "loss_scale": 7.0}}))
    out = convert_reference_checkpoint(tmp_path / "ckpt", tmp_path / "out")
    cfg = json.loads((out / "config.json").read_text())
    assert (cfg["pos_weight"], cfg["loss_scale"]) == (123.0, 7.0)


@pytest.mark.parametrize("change, message", [
    (dict(norm="layer"), "norm='layer'"),
    (dict(mlp_type="simple_gelu"), "mlp_type='simple_gelu'"),
    (dict(num_layers=3), "missing"),  # the config promises a layer the weights lack
    (dict(mlp_factor=3.0), "shape"),
])
def test_configs_the_llama_backbone_cannot_hold_raise(tmp_path, change, message):
    reference_checkpoint(tmp_path / "ckpt")
    cfg_path = tmp_path / "ckpt" / "transformer" / "transformer_config.yaml"
    cfg_path.write_text(json.dumps({**json.loads(cfg_path.read_text()), **change}))
    with pytest.raises(ValueError, match=message):
        convert_reference_checkpoint(tmp_path / "ckpt", tmp_path / "out")


def test_unknown_keys_and_missing_files_raise(tmp_path):
    state, _ = reference_checkpoint(tmp_path / "ckpt")
    torch.save({**state, "transformer.layers.0.mlp.extra.weight": torch.zeros(1)},
               tmp_path / "ckpt" / "transformer" / "transformer.pt")
    with pytest.raises(ValueError, match="match no rule"):
        convert_reference_checkpoint(tmp_path / "ckpt", tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="transformer.pt"):
        convert_reference_checkpoint(tmp_path / "nothing", tmp_path / "out")
