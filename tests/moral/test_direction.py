"""MoralDirection: properties on synthetic embeddings, the sklearn/reference-code PCA as oracle, encoders, I/O."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hf_ext.moral import MoralDirection, resources
from hf_ext.moral.encoders import CallableEncoder, MeanPoolingEncoder, as_encoder

from .conftest import NEG, POS, SyntheticEncoder, question_lookup, tiny_encoder

VERBS = resources.atomic_verbs()


def synthetic_embeddings(seed: int, dim: int = 24, templates: int | None = None) -> np.ndarray:
    """e_i = s_i·u + ε with s = +1 (good) / −1 (bad) / 0 (neutral) per atomic verb."""
    rng = np.random.default_rng(seed)
    s = np.array([1.0 if v in POS else -1.0 if v in NEG else 0.0 for v in VERBS])
    u = rng.normal(size=dim)
    shape = (len(VERBS), dim) if templates is None else (len(VERBS), templates, dim)
    eps = 0.2 * rng.normal(size=shape)
    base = s[:, None] * u
    return (base if templates is None else base[:, None, :]) + eps


# ------------------------------------------------------------------------------------------- properties


@pytest.mark.parametrize("seed", range(5))
def test_max_abs_fit_score_is_one_and_kill_negative(seed):
    md = MoralDirection.from_embeddings(synthetic_embeddings(seed))
    scores = dict(zip(md.fit_phrases, md.fit_scores))
    assert np.abs(md.fit_scores).max() == pytest.approx(1.0, abs=1e-12)
    assert scores["kill"] < 0 < scores["smile"]
    # fit scores are the projection of the fit vectors (independent path: project())
    np.testing.assert_allclose(md.project(synthetic_embeddings(seed)), md.fit_scores, atol=1e-12)
    assert np.linalg.norm(md.direction) == pytest.approx(1.0)


@pytest.mark.parametrize("seed", range(3))
def test_orientation_invariant_to_basis_negation_and_permutation(seed):
    x = synthetic_embeddings(seed)
    md = MoralDirection.from_embeddings(x)
    neg = MoralDirection.from_embeddings(-x)
    np.testing.assert_allclose(neg.fit_scores, md.fit_scores, atol=1e-10)
    perm = np.random.default_rng(seed).permutation(len(VERBS))
    shuffled = MoralDirection.from_embeddings(x[perm], [VERBS[i] for i in perm])
    np.testing.assert_allclose(dict_scores(shuffled, VERBS), md.fit_scores, atol=1e-10)
    # an orthogonal change of basis of the embedding space does not change scores either
    q, _ = np.linalg.qr(np.random.default_rng(seed + 10).normal(size=(x.shape[1], x.shape[1])))
    rot = MoralDirection.from_embeddings(x @ q)
    np.testing.assert_allclose(rot.fit_scores, md.fit_scores, atol=1e-10)
    probe = np.random.default_rng(seed + 20).normal(size=(7, x.shape[1]))
    np.testing.assert_allclose(rot.project(probe @ q), md.project(probe), atol=1e-10)


def dict_scores(md, order):
    d = dict(zip(md.fit_phrases, md.fit_scores))
    return np.array([d[v] for v in order])


def test_matches_sklearn_pca_and_the_reference_sign_rule():
    """Oracle: sklearn PCA(5, svd_solver='full') as the reference code calls it, and its cluster-based sign rule."""
    sklearn = pytest.importorskip("sklearn")
    from sklearn.cluster import AgglomerativeClustering
    from sklearn.decomposition import PCA

    assert sklearn.__version__
    x = synthetic_embeddings(0)
    md = MoralDirection.from_embeddings(x)
    pca = PCA(n_components=5, svd_solver="full")
    y = pca.fit_transform(x)
    np.testing.assert_allclose(np.abs(md.components @ pca.components_.T), np.eye(5), atol=1e-8)
    np.testing.assert_allclose(md.mean, pca.mean_, atol=1e-12)
    np.testing.assert_allclose(md.explained_variance_ratio, pca.explained_variance_ratio_, atol=1e-10)
    # reference sign: Ward clustering (2) on Y, the cluster without "kill" gets the positive sign
    labels = AgglomerativeClustering(n_clusters=2).fit_predict(y)
    kill_label = labels[VERBS.index("kill")]
    sign = np.sign(y[labels != kill_label, 0].mean())
    ref = sign * y[:, 0] / np.abs(y[:, 0]).max()
    np.testing.assert_allclose(md.fit_scores, ref, atol=1e-10)


def test_out_of_sample_scores_are_not_clipped():
    x = synthetic_embeddings(1)
    md = MoralDirection.from_embeddings(x)
    kill = x[VERBS.index("kill")]
    far = md.mean + 3.0 * (kill - md.mean)
    assert md.project(far[None])[0] == pytest.approx(3.0 * md.project(kill[None])[0])
    assert md.project(far[None])[0] < -1.5


def test_template_averaging_identity():
    """Scoring a phrase with templates = mean of its 10 question scores (PCA projection is affine)."""
    enc = SyntheticEncoder(noise=0.5)
    md = MoralDirection.fit(enc, progress=False)
    phrases = ["kill people", "smile at my friend", "eat dirt"]
    with_t = md.score(phrases, use_templates=True)
    per_question = [md.score(resources.template_questions(p)).mean() for p in phrases]
    np.testing.assert_allclose(with_t, per_question, atol=1e-10)
    # and equals projecting the mean embedding (naive loop)
    for p, s in zip(phrases, with_t):
        mean_emb = np.mean(enc(resources.template_questions(p)), axis=0)
        assert float((mean_emb - md.mean) @ md.direction / md.norm) == pytest.approx(s, abs=1e-6)


def test_fit_embeds_the_templates_and_averages():
    enc = SyntheticEncoder()
    md = MoralDirection.fit(enc, progress=False)
    assert enc.calls == [t.format(v) for v in VERBS for t in resources.templates()]
    x = enc([t.format(v) for v in VERBS for t in resources.templates()]).reshape(64, 10, -1).mean(1)
    np.testing.assert_allclose(md.fit_scores, MoralDirection.from_embeddings(x).fit_scores, atol=1e-6)
    s = dict(zip(md.fit_phrases, md.fit_scores))
    assert s["kill"] < 0 < s["smile"] and md.metadata["fit_questions"] == "templates"


def test_orientation_from_anchor_even_when_encoder_axis_is_flipped():
    a = MoralDirection.fit(SyntheticEncoder(flip=False), progress=False)
    b = MoralDirection.fit(SyntheticEncoder(flip=True), progress=False)
    np.testing.assert_allclose(a.fit_scores, b.fit_scores, atol=1e-6)
    assert a.score(["Someone was cruel to kill"])[0] < 0 < a.score(["smile and hug"])[0]


# ------------------------------------------------------------------------------------------- multilingual


@pytest.mark.parametrize("lang", ["ar", "cs", "de", "zh"])
def test_multilingual_fit_uses_translated_questions(lang):
    enc = SyntheticEncoder(lookup=question_lookup())
    md = MoralDirection.fit(enc, lang, progress=False)
    table = resources.translated_questions(lang)
    assert enc.calls == [q for v in VERBS for q in table[v]]
    s = dict(zip(md.fit_phrases, md.fit_scores))
    assert md.language == lang and s["kill"] < 0 < s["smile"] and max(map(abs, s.values())) == pytest.approx(1)
    enc.calls.clear()
    score = md.score(["kill people", "help old people"], use_templates=True)
    assert enc.calls == table["kill people"] + table["help old people"]
    assert score[0] < 0


def test_multilingual_user_study_covers_115_actions():
    from hf_ext.moral.evaluation import user_study_correlation

    md = MoralDirection.fit(SyntheticEncoder(lookup=question_lookup()), "de", progress=False)
    res = user_study_correlation(md)
    assert res["n"] == 115 and res["missing"] == ["eat humans"] and res["language"] == "de"


def test_user_supplied_questions_for_another_language():
    qs = {v: [f"Est-ce bien de {v} ?", f"Dois-je {v} ?"] for v in VERBS}
    enc = SyntheticEncoder()
    md = MoralDirection.fit(enc, "fr", questions=qs, progress=False)
    assert md.language == "fr" and enc.calls[:2] == qs[VERBS[0]]
    assert md.score_questions([["Dois-je kill ?"], ["Dois-je smile ?"]]).tolist() == sorted(
        md.score_questions([["Dois-je kill ?"], ["Dois-je smile ?"]]).tolist())


# ------------------------------------------------------------------------------------------- encoders


@pytest.mark.parametrize("family", ["bert", "roberta", "distilbert"])
def test_mean_pooling_matches_sentence_transformers(family, tmp_path):
    """Oracle: sentence-transformers' Transformer + Pooling('mean') over the same checkpoint."""
    st = pytest.importorskip("sentence_transformers")
    model, tok = tiny_encoder(family)
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    try:
        from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    except ImportError:  # sentence-transformers < 6
        from sentence_transformers.models import Pooling, Transformer
    word = Transformer(str(tmp_path), max_seq_length=120)
    dim = (getattr(word, "get_embedding_dimension", None) or word.get_word_embedding_dimension)()
    ref = st.SentenceTransformer(modules=[word, Pooling(dim, "mean")], device="cpu")
    texts = ["Is it ok to kill?", "Should I smile at my friend?", "Eat"]
    ours = MeanPoolingEncoder(model, tok, batch_size=2).encode(texts)
    np.testing.assert_allclose(ours, ref.encode(texts, batch_size=3), atol=1e-5)


def test_mean_pooling_is_padding_independent():
    """Batched (padded) = one text at a time, even with a left-padding tokenizer (naive per-text loop as oracle)."""
    model, tok = tiny_encoder("bert")
    from hf_ext.testing import tiny_tokenizer

    left = tiny_tokenizer()  # pads on the left by default
    texts = ["Is it ok to kill?", "Eat", "Should I smile at my friend?"]
    batched = MeanPoolingEncoder(model, left, batch_size=3).encode(texts)
    single = np.concatenate([MeanPoolingEncoder(model, tok, batch_size=1).encode([t]) for t in texts])
    np.testing.assert_allclose(batched, single, atol=1e-5)


@pytest.mark.parametrize("family", ["bert", "roberta", "distilbert"])
def test_fit_with_plain_transformers_encoder(family):
    model, tok = tiny_encoder(family)
    md = MoralDirection.fit(model, tokenizer=tok, progress=False, batch_size=128)
    assert md.dim == 32 and np.abs(md.fit_scores).max() == pytest.approx(1.0)
    assert dict(zip(md.fit_phrases, md.fit_scores))["kill"] < 0
    scores = md.score(["kill people", "hug"], use_templates=True)
    assert scores.shape == (2,) and np.isfinite(scores).all()


def test_fit_with_sentence_transformers_path(tiny_st_dir):
    pytest.importorskip("sentence_transformers")
    md = MoralDirection.fit(str(tiny_st_dir), progress=False, batch_size=128)
    model, tok = tiny_encoder("bert")
    plain = MoralDirection.fit(model, tokenizer=tok, progress=False, batch_size=128)
    np.testing.assert_allclose(md.fit_scores, plain.fit_scores, atol=1e-4)
    assert md.encoder_name == str(tiny_st_dir)


# ------------------------------------------------------------------------------------------- persistence


def test_save_load_round_trip(tmp_path):
    enc = SyntheticEncoder()
    md = MoralDirection.fit(enc, progress=False)
    md.metadata["note"] = "ünïcode"
    path = md.save(tmp_path / "md")
    assert path.name == "moral_direction.json" and (tmp_path / "md" / "moral_direction.safetensors").is_file()
    back = MoralDirection.load(tmp_path / "md", encoder=enc)
    for name in ("direction", "mean", "components", "fit_scores", "explained_variance_ratio"):
        np.testing.assert_array_equal(getattr(back, name), getattr(md, name))
    assert (back.norm, back.language, back.anchor, back.fit_phrases, back.metadata) == (
        md.norm, md.language, md.anchor, md.fit_phrases, md.metadata)
    texts = ["kill people", "Someone cared for someone weak."]
    np.testing.assert_array_equal(back.score(texts), md.score(texts))
    stem = md.save(tmp_path / "flat" / "mine.json")
    assert stem.name == "mine.json" and MoralDirection.load(tmp_path / "flat" / "mine.json").norm == md.norm
    assert "pickle" not in json.dumps(md.config())


def test_bad_inputs(tmp_path):
    enc = SyntheticEncoder()
    md = MoralDirection.fit(enc, progress=False)
    with pytest.raises(ValueError, match="empty"):
        md.score([])
    with pytest.raises(TypeError, match="list of strings"):
        md.score("kill people")
    with pytest.raises(TypeError, match="strings"):
        md.score(["ok", 3])
    with pytest.raises(ValueError, match="language 'xx'"):
        MoralDirection.fit(enc, "xx", progress=False)
    with pytest.raises(ValueError, match="language"):
        MoralDirection.fit(enc, "", progress=False)
    with pytest.raises(ValueError, match="no shipped 'de' translation"):
        MoralDirection.fit(SyntheticEncoder(lookup=question_lookup()), "de", progress=False).score(
            ["juggle"], use_templates=True)
    md.save(tmp_path)
    other = CallableEncoder(lambda t: np.ones((len(t), 8)), dim=8, name="eight")
    with pytest.raises(ValueError, match="output dimension 8 .* dimension 16"):
        MoralDirection.load(tmp_path, encoder=other)
    loose = MoralDirection.load(tmp_path, encoder=lambda t: np.ones((len(t), 8)))  # dim unknown until called
    with pytest.raises(ValueError, match="output dimension 8 does not match"):
        loose.score(["kill"])
    with pytest.raises(ValueError, match="no encoder attached"):
        MoralDirection.load(tmp_path).score(["kill"])
    with pytest.raises(FileNotFoundError):
        MoralDirection.load(tmp_path / "nope")
    (tmp_path / "x.json").write_text('{"format": "other"}')
    (tmp_path / "x.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match="not a MoralDirection file"):
        MoralDirection.load(tmp_path / "x.json")
    with pytest.raises(ValueError, match="identical"):
        MoralDirection.fit(lambda t: np.ones((len(t), 4)), progress=False)
    with pytest.raises(ValueError, match="anchor"):
        MoralDirection.from_embeddings(np.eye(3), ["a", "b", "c"])
    with pytest.raises(ValueError, match="rows"):
        MoralDirection.from_embeddings(np.eye(3), ["a", "kill"])
    with pytest.raises(TypeError, match="tokenizer"):
        as_encoder(tiny_encoder("bert")[0])
    with pytest.raises(TypeError, match="cannot use"):
        as_encoder(42)
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        CallableEncoder(lambda t: np.ones(3)).encode(["a", "b", "c"])


def test_model_card_renders(tmp_path):
    from huggingface_hub import ModelCard

    md = MoralDirection.fit(SyntheticEncoder(), progress=False)
    md.metadata["user_study"] = {"globalAMT": {"r": 0.5, "p": 1e-5, "n": 116, "r_dos": 0.2, "n_dos": 67, "r_donts": 0.3,
                                               "n_donts": 49}}
    card = md.model_card(model_name="md-synthetic", mfq={"care": 0.25, "fairness": -0.1})
    text = str(card)
    assert "| globalAMT | 116 | 0.5000 |" in text and "care +0.250" in text and "'kill' scores < 0" in text
    card.save(tmp_path / "README.md")
    back = ModelCard.load(tmp_path / "README.md")
    assert back.data.eval_results[0].metric_value == 0.5 and back.data.license == "apache-2.0"


def test_user_study_raw_variant_embeds_the_participants_question():
    from hf_ext.moral.evaluation import user_study_correlation

    enc = SyntheticEncoder()
    md = MoralDirection.fit(enc, progress=False)
    enc.calls.clear()
    res = user_study_correlation(md, "regional", variant="raw")
    questions = resources.user_study_questions("regional")
    assert len(questions) == 113 and questions["borrow a book"] == "Is it polite to borrow a book?"
    assert enc.calls == [questions[a] for a in resources.human_scores("regional")]
    assert res["n"] == 113 and res["variant"] == "raw"
    with pytest.raises(ValueError, match="variant"):
        user_study_correlation(md, variant="qa")


def test_fit_is_deterministic(tmp_path):
    """No randomness in the fit: the same encoder gives bit-identical arrays and the same JSON."""
    from safetensors.numpy import load_file

    a = MoralDirection.fit(SyntheticEncoder(), progress=False).save(tmp_path / "a")
    b = MoralDirection.fit(SyntheticEncoder(), progress=False).save(tmp_path / "b")
    assert a.read_text() == b.read_text()
    ta, tb = load_file(str(a.with_suffix(".safetensors"))), load_file(str(b.with_suffix(".safetensors")))
    assert ta.keys() == tb.keys() and all(ta[k].tobytes() == tb[k].tobytes() for k in ta)
