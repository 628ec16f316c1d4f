"""TFreeForCausalLM: EmbeddingBag, sparse loss, dictionary decoding, generate(), save/load, errors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from hf_ext.tfree import TFreeConfig, TFreeForCausalLM, TFreeTokenizer, sparse_bce_loss

from .conftest import WORDS, tfree_model

FAMILIES = ["llama", "qwen2", "gpt_neox"]


def test_embeddingbag_equals_explicit_sum_of_rows(llama_tfree):
    model, tok = llama_tfree
    ids = tok(["the cat sat on the mat."], return_tensors="pt").input_ids
    acts = tok.encode_activations(["the cat sat on the mat."])["activation_ids"]
    E = model.embed.weight
    words = tok.convert_ids_to_tokens(ids[0].tolist())
    expected = torch.stack([E[torch.as_tensor(tok.word_pattern(w))].sum(0) for w in words])
    torch.testing.assert_close(model.embed_words(input_ids=ids)[0], expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(model.embed_words(activation_ids=acts)[0], expected, atol=1e-5, rtol=1e-5)


def test_all_ones_rows_give_n_times_m():
    model, tok = tfree_model("llama")
    with torch.no_grad():
        saved = model.embed.weight.clone()
        model.embed.weight.fill_(1.0)
        try:
            e = model.embed_words(activation_ids=tok.encode_activations(["Hello"])["activation_ids"])
        finally:
            model.embed.weight.copy_(saved)
    assert torch.all(e == 5 * 4)  # "Hello": 5 trigrams × m = 4


def _dense_reference(logits, act_labels, pos_weight, loss_scale):
    """BCEWithLogits on a dense multi-hot target built by a Python loop (the reference's int8 target, binarised)."""
    B, W, _ = act_labels.shape
    v = logits.shape[-1]
    targets = torch.zeros(B, W - 1, v)
    weights = torch.zeros(B, W - 1)
    for b in range(B):
        for p in range(W - 1):
            ids = [i for i in act_labels[b, p + 1].tolist() if i >= 0]
            if ids:
                weights[b, p] = 1
                for i in ids:
                    targets[b, p, i] = 1
    bce = F.binary_cross_entropy_with_logits(logits, targets, pos_weight=torch.full((v,), pos_weight), reduction="none")
    return loss_scale * (bce.sum(-1) * weights).sum() / (weights.sum() * v)


@pytest.mark.parametrize("pos_weight, loss_scale", [(1.0, 1.0), (300.0, 100.0)])
def test_sparse_loss_equals_dense_reference(pos_weight, loss_scale):
    model, tok = tfree_model("llama")
    enc = tok.encode_activations(["the cat sat on the mat.", "a dog ate"], padding_side="right")
    acts = enc["activation_ids"]
    model.config.pos_weight, model.config.loss_scale = pos_weight, loss_scale
    try:
        out = model(activation_ids=acts, attention_mask=enc["attention_mask"], labels=acts,
                    return_activation_logits=True, logits_to_keep=0, return_dictionary_scores=False)
    finally:
        model.config.pos_weight, model.config.loss_scale = 300.0, 100.0
    ref = _dense_reference(out.activation_logits[:, :-1].float(), acts, pos_weight, loss_scale)
    torch.testing.assert_close(out.loss, ref, rtol=1e-5, atol=1e-6)
    # word-id labels (-100 = ignore) give the same loss as activation labels
    ids = tok(["the cat sat on the mat.", "a dog ate"], return_tensors="pt", padding=True, padding_side="right")
    labels = ids.input_ids.masked_fill(ids.attention_mask == 0, -100)
    model.config.pos_weight, model.config.loss_scale = pos_weight, loss_scale
    try:
        out2 = model(input_ids=ids.input_ids, attention_mask=ids.attention_mask, labels=labels)
    finally:
        model.config.pos_weight, model.config.loss_scale = 300.0, 100.0
    torch.testing.assert_close(out2.loss, ref, rtol=1e-4, atol=1e-5)


def test_loss_at_zero_logits_is_log2_with_pos_weight():
    logits = torch.zeros(3, 50)
    rows, cols = torch.tensor([0, 0, 2]), torch.tensor([1, 7, 3])
    loss = sparse_bce_loss(logits, rows, cols, torch.ones(3), pos_weight=10.0)
    expected = (150 * math.log(2) + 3 * (10 - 1) * math.log(2)) / 150
    assert float(loss) == pytest.approx(expected, rel=1e-6)
    assert float(sparse_bce_loss(logits, rows[:0], cols[:0], torch.ones(3), pos_weight=10.0)) == pytest.approx(math.log(2))


def _naive_scores(model, act_logits, words, tok):
    v, m = model.config.hash_vocab_size, model.config.num_activations
    a = torch.sigmoid(act_logits.float())
    out = []
    for w in words:
        pattern = sorted(set(tok.word_pattern(w).tolist()))
        n_tri = 1 if w.startswith("<|") else len(tok.hasher.trigram_ids(w))
        s = a[pattern].sum()
        if model.config.decode_variant == "pos_only":
            out.append(s / (m * n_tri))
        else:
            out.append(s / (m * n_tri) + (s - a.sum()) / (v - m * n_tri))
    return torch.stack(out)


@pytest.mark.parametrize("variant", ["pos_minus_neg", "pos_only"])
def test_dictionary_scores_match_formula_and_argmax_oracle(variant):
    # v=32000, m=10 as in spec §10: no hash collisions inside these words, so "aa" ⊂ "aaa" exactly
    model, tok = tfree_model("llama", hash_vocab_size=32000, num_activations=10)
    model.config.decode_variant = variant
    try:
        x = torch.randn(32000, generator=torch.Generator().manual_seed(0))
        torch.testing.assert_close(model.dictionary_scores(x), _naive_scores(model, x, tok.words, tok), atol=1e-5,
                                   rtol=1e-5)
        for target in ["cat", "Hello", "bone", "aaa", "aa"]:
            pat = torch.as_tensor(sorted(set(tok.word_pattern(target).tolist())))
            logits = torch.full((32000,), -8.0)
            logits[pat] = 8.0
            scores = model.dictionary_scores(logits)
            best = scores.max()
            winners = [tok.words[i] for i in torch.nonzero(scores >= best - 1e-6).flatten().tolist()]
            if variant == "pos_only" and target == "aaa":
                assert set(winners) == {"aa", "aaa"}  # "aa" ⊂ "aaa": variant 1 ties (spec §10)
            else:
                assert winners == [target]
    finally:
        model.config.decode_variant = "pos_minus_neg"


def test_logits_to_keep_and_activation_logits(llama_tfree):
    model, tok = llama_tfree
    ids = tok(["the cat sat"], return_tensors="pt").input_ids
    full = model(ids, return_activation_logits=True)
    last = model(ids, logits_to_keep=1)
    assert full.logits.shape == (1, 3, model.dictionary_size) and last.logits.shape == (1, 1, model.dictionary_size)
    assert full.activation_logits.shape == (1, 3, 1024)
    torch.testing.assert_close(last.logits[:, 0], full.logits[:, -1])


@pytest.mark.parametrize("family", FAMILIES)
def test_generate_greedy_equals_manual_argmax_loop(family):
    model, tok = tfree_model(family)
    ids = tok(["the cat sat on"], return_tensors="pt").input_ids
    out = model.generate(ids, max_new_tokens=6, do_sample=False, eos_token_id=None, pad_token_id=1)
    seq = ids
    with torch.no_grad():
        for _ in range(6):  # no cache: the full sequence each step
            nxt = model(seq, use_cache=False).logits[:, -1].argmax(-1, keepdim=True)
            seq = torch.cat([seq, nxt], 1)
    assert out.tolist() == seq.tolist()


@pytest.mark.parametrize("family", FAMILIES)
def test_batched_generation_equals_single(family):
    model, tok = tfree_model(family)
    prompts = ["the cat sat on the mat", "a dog"]
    enc = tok(prompts, return_tensors="pt", padding=True, padding_side="left")
    batch = model.generate(**enc, max_new_tokens=4, do_sample=False, eos_token_id=None, pad_token_id=1)
    for row, prompt in enumerate(prompts):
        single = tok([prompt], return_tensors="pt").input_ids
        one = model.generate(single, max_new_tokens=4, do_sample=False, eos_token_id=None, pad_token_id=1)
        assert batch[row, -4:].tolist() == one[0, -4:].tolist()


def test_sampling_and_beam_search(llama_tfree):
    model, tok = llama_tfree
    ids = tok(["the cat"], return_tensors="pt").input_ids
    torch.manual_seed(0)
    a = model.generate(ids, max_new_tokens=5, do_sample=True, top_k=8, temperature=0.05, pad_token_id=1)
    torch.manual_seed(0)
    b = model.generate(ids, max_new_tokens=5, do_sample=True, top_k=8, temperature=0.05, pad_token_id=1)
    assert a.tolist() == b.tolist() and int(a.max()) < model.dictionary_size
    beams = model.generate(ids, max_new_tokens=4, num_beams=3, num_return_sequences=3, do_sample=False,
                           pad_token_id=1, eos_token_id=None)
    assert beams.shape == (3, 2 + 4)
    greedy = model.generate(ids, max_new_tokens=4, num_beams=1, do_sample=False, pad_token_id=1, eos_token_id=None)
    beam1 = model.generate(ids, max_new_tokens=4, num_beams=1, do_sample=False, pad_token_id=1, eos_token_id=None,
                           repetition_penalty=1.0)
    assert greedy.tolist() == beam1.tolist()


def test_generate_text_adds_prompt_words_per_call(llama_tfree):
    model, tok = llama_tfree
    d0, t0 = model.dictionary_size, len(tok)
    texts = model.generate_text(tok, ["the zebra-unicorn", "cat"], max_new_words=3, do_sample=False)
    assert len(texts) == 2 and all(isinstance(t, str) for t in texts)
    assert model.dictionary_size == d0 and len(tok) == t0  # restored


def test_save_load_auto_classes(tmp_path, llama_tfree):
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    model, tok = llama_tfree
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    assert AutoConfig.from_pretrained(tmp_path).model_type == "tfree"
    m2 = AutoModelForCausalLM.from_pretrained(tmp_path)
    t2 = AutoTokenizer.from_pretrained(tmp_path)
    assert isinstance(m2, TFreeForCausalLM) and isinstance(t2, TFreeTokenizer)
    assert t2.words == tok.words and t2.hash_config() == tok.hash_config()
    ids = tok(["the cat sat"], return_tensors="pt").input_ids
    torch.testing.assert_close(m2(ids).logits, model(ids).logits)
    assert m2.config.get_text_config(decoder=True).model_type == "llama"
    bf = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.bfloat16, device_map="cpu")
    assert bf.embed.weight.dtype == torch.bfloat16 and bf.dict_indices.dtype == torch.long
    assert bf(ids).logits.shape[-1] == model.dictionary_size


def test_lora_on_backbone():
    peft = pytest.importorskip("peft")
    model, tok = tfree_model("llama", seed=1)
    lora = peft.get_peft_model(model, peft.LoraConfig(r=4, target_modules=["q_proj", "v_proj"],
                                                      modules_to_save=["lm_head", "embed"]))
    acts = tok.encode_activations(["the cat sat on the mat."])["activation_ids"]
    out = lora(activation_ids=acts, labels=acts)
    out.loss.backward()
    grads = [n for n, p in lora.named_parameters() if p.grad is not None]
    assert any("lora_A" in n for n in grads) and any("lm_head" in n for n in grads)
    lora.unload()  # restore the shared model


def test_convert_to_tfree_keeps_decoder_weights():
    from hf_ext.testing import tiny_causal_lm
    from hf_ext.tfree import convert_to_tfree

    for family in ["llama", "gpt2"]:
        base = tiny_causal_lm(family)
        tok = TFreeTokenizer(words=WORDS, hash_vocab_size=512, num_activations=4)
        tfree = convert_to_tfree(base, tokenizer=tok)
        base_state = base.base_model.state_dict()
        for name, tensor in tfree.model.state_dict().items():
            if name in base_state and tensor.shape == base_state[name].shape and "emb" not in name and "wte" not in name:
                assert torch.equal(tensor, base_state[name]), name
        assert tfree.embed.weight.shape == (512, base.config.get_text_config().hidden_size)
        ids = tok(["the cat"], return_tensors="pt").input_ids
        assert tfree.generate(ids, max_new_tokens=2, do_sample=False, pad_token_id=1).shape == (1, 4)


def test_param_count_2vh():
    model, _ = tfree_model("llama")
    assert model.embed.weight.numel() + model.lm_head.weight.numel() == 2 * 1024 * 32


def test_bad_inputs(llama_tfree):
    model, tok = llama_tfree
    with pytest.raises(ValueError, match="decode dictionary is empty"):
        model.set_decode_dictionary([])
    with pytest.raises(ValueError, match=r"word ids must be in \[0,"):
        model(torch.tensor([[model.dictionary_size + 5]]))
    with pytest.raises(ValueError, match="must match the input's"):
        model(torch.tensor([[3, 4]]), labels=torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="labels must be"):
        model(torch.tensor([[3, 4]]), labels=torch.zeros(1, 2, 3, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="activation_ids must be"):
        model(activation_ids=torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="hash_vocab_size=1024"):
        model(activation_ids=torch.full((1, 2, 3), 5000))
    with pytest.raises(ValueError, match="tokenizer hashes with"):
        model.set_decode_dictionary(TFreeTokenizer(hash_vocab_size=2048, num_activations=4))
    with pytest.raises(TypeError, match="TFreeTokenizer or a list of words"):
        model.set_decode_dictionary("the cat")
    with pytest.raises(ValueError, match="num_activations=20"):
        TFreeConfig(hash_vocab_size=16, num_activations=20)
    with pytest.raises(ValueError, match="num_lowercase_activations=5"):
        TFreeConfig(num_activations=4, num_lowercase_activations=5)
    with pytest.raises(ValueError, match="unknown hash_scheme 'xx'"):
        TFreeConfig(hash_scheme="xx")
    with pytest.raises(ValueError, match="decode_variant"):
        TFreeConfig(decode_variant="best")
    with pytest.raises(TypeError, match="text_config must be"):
        TFreeConfig(text_config=42)
    empty = TFreeForCausalLM(TFreeConfig(hash_vocab_size=64, num_activations=2))
    with pytest.raises(ValueError, match="decode dictionary is empty"):
        empty(torch.tensor([[0]]))
    with pytest.raises(TypeError, match=r"texts\[0\] must be a str"):
        tok.encode_activations([b"bytes"])


def test_fast_hash_scheme_model_runs():
    model, tok = tfree_model("llama", hash_scheme="fast")
    assert tok.hash_scheme == "fast"
    ids = tok(["Hello world"], return_tensors="pt").input_ids
    with torch.no_grad():
        scores = model(ids).logits
    assert scores.shape == (1, 2, model.dictionary_size) and float(scores.abs().max()) <= 1.0  # mean on − mean off
    out = model.generate(ids, max_new_tokens=3, do_sample=False, pad_token_id=1, eos_token_id=None)
    assert out.shape == (1, 5)


def test_logits_processors_and_stopping(llama_tfree):
    model, tok = llama_tfree
    ids = tok(["the cat sat"], return_tensors="pt").input_ids
    greedy = model.generate(ids, max_new_tokens=3, do_sample=False, pad_token_id=1, eos_token_id=None)
    first = int(greedy[0, ids.shape[1]])
    suppressed = model.generate(ids, max_new_tokens=3, do_sample=False, pad_token_id=1, eos_token_id=None,
                                suppress_tokens=[first])
    assert int(suppressed[0, ids.shape[1]]) != first
    stopped = model.generate(ids, max_new_tokens=3, do_sample=False, pad_token_id=1, eos_token_id=first)
    assert stopped.shape[1] == ids.shape[1] + 1
