"""MCC-250-style evaluation (oracle generator + oracle scorer), CLIP zero-shot scorer, multilingual check."""

from __future__ import annotations

import pytest
import torch

from hf_ext.diffusion.multifusion.evaluation import (
    MCC_COLORS,
    TRANSLATIONS,
    ClipZeroShotScorer,
    evaluate_mcc,
    mcc_prompts,
    multilingual_similarity,
)


def test_mcc_prompts_form_and_determinism():
    a, b = mcc_prompts(5, seed=1), mcc_prompts(5, seed=1)
    assert [p.text for p in a] == [p.text for p in b]
    for p in a:
        (c1, o1), (c2, o2) = p.pairs
        assert p.text == f"a {c1} {o1} and a {c2} {o2}" and c1 != c2 and o1 != o2
        assert p.multimodal[0] == f"a {c1} {o1}" and p.multimodal[1].getpixel((16, 16)) == MCC_COLORS[c1]
        assert p.multimodal[3].getpixel((16, 16)) == MCC_COLORS[c2]
    with pytest.raises(ValueError, match="positive int"):
        mcc_prompts(0)


def _draw_two(colors, objects=("apple", "car")):
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (32, 16), (128, 128, 128))
    img.info["objects"] = list(objects)  # where the oracle scorer finds each object: left half, right half
    d = ImageDraw.Draw(img)
    d.rectangle([0, 0, 15, 15], fill=MCC_COLORS[colors[0]])
    d.rectangle([16, 0, 31, 15], fill=MCC_COLORS[colors[1]])
    return img


class HalfColorScorer:
    """Oracle scorer: object k of the prompt lives in half k of the image; score = −distance of colours."""

    def __call__(self, images, texts):
        out = torch.zeros(len(images), len(texts))
        for i, img in enumerate(images):
            for j, t in enumerate(texts):
                _, color, obj = t.split(" ")
                half = img.info["objects"].index(obj)
                pix = img.getpixel((8 + 16 * half, 8))
                out[i, j] = -sum((a - b) ** 2 for a, b in zip(pix, MCC_COLORS[color]))
        return out


def test_evaluate_mcc_counts_only_prompts_with_both_colours_right():
    prompts = mcc_prompts(6, seed=0)
    by_text = {p.text: p for p in prompts}
    scorer = HalfColorScorer()

    def right(prompt):
        p = by_text[prompt] if isinstance(prompt, str) else by_text[prompt[0] + prompt[2]]
        return _draw_two([c for c, _ in p.pairs], [o for _, o in p.pairs])

    def swapped(prompt):
        p = by_text[prompt] if isinstance(prompt, str) else by_text[prompt[0] + prompt[2]]
        return _draw_two([c for c, _ in p.pairs][::-1], [o for _, o in p.pairs])

    def half_right(prompt):
        p = by_text[prompt] if isinstance(prompt, str) else by_text[prompt[0] + prompt[2]]
        other = next(c for c in MCC_COLORS if c not in {c for c, _ in p.pairs})
        return _draw_two([p.pairs[0][0], other], [o for _, o in p.pairs])

    res = evaluate_mcc(right, scorer, prompts, progress=False)
    assert res["text"] == res["multimodal"] == 1.0 and res["n"] == 6
    assert evaluate_mcc(swapped, scorer, prompts, progress=False)["text"] == 0.0
    assert evaluate_mcc(half_right, scorer, prompts, modes=["text"], progress=False)["text"] == 0.0
    with pytest.raises(ValueError, match="unknown mode"):
        evaluate_mcc(right, scorer, prompts, modes=["video"])


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    """A tiny random CLIP checkpoint (model + processor) saved to a local folder."""
    from transformers import CLIPConfig, CLIPModel, CLIPProcessor

    from hf_ext.diffusion.multifusion.tiny import tiny_image_processor
    from hf_ext.tiny import _tiny_clip_text_config, tiny_clip_tokenizer

    path = tmp_path_factory.mktemp("clip")
    tok = tiny_clip_tokenizer(32)
    vision = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4, image_size=32,
                  patch_size=8)
    cfg = CLIPConfig(text_config=_tiny_clip_text_config(len(tok)).to_dict(), vision_config=vision, projection_dim=16)
    torch.manual_seed(0)
    CLIPModel(cfg).save_pretrained(path)
    CLIPProcessor(image_processor=tiny_image_processor(), tokenizer=tok).save_pretrained(path)
    return path


def test_clip_zero_shot_scorer_from_a_local_checkpoint(clip_dir):
    scorer = ClipZeroShotScorer(str(clip_dir))
    imgs = [_draw_two(["red", "blue"]), _draw_two(["green", "black"])]
    texts = ["a red apple", "a blue car", "a cat"]
    scores = scorer(imgs, texts)
    # independent reference: normalised projections, cosine times exp(logit_scale)
    m, p = scorer.model, scorer.processor
    with torch.no_grad():
        ti = p(text=texts, return_tensors="pt", padding=True)
        ii = p(images=imgs, return_tensors="pt")
        t = m.get_text_features(**ti)
        v = m.get_image_features(**ii)
        t = getattr(t, "pooler_output", t)
        v = getattr(v, "pooler_output", v)
        ref = m.logit_scale.exp() * torch.nn.functional.normalize(v, dim=-1) @ torch.nn.functional.normalize(t, dim=-1).T
    assert scores.shape == (2, 3)
    torch.testing.assert_close(scores, ref, rtol=1e-4, atol=1e-4)


def test_multilingual_similarity(llava):
    from hf_ext.diffusion.multifusion import InterleavedEncoder

    model, processor = llava
    enc = InterleavedEncoder(model, processor.tokenizer, processor.image_processor)
    sims = multilingual_similarity(enc)
    assert set(sims) == {"de", "fr", "it", "es"} and all(-1 <= v <= 1 for v in sims.values())
    same = multilingual_similarity(enc, {"a cat": {"en": "a cat"}})
    assert same["en"] == pytest.approx(1.0, abs=1e-6)
    assert len(TRANSLATIONS) >= 4


def test_evaluation_command_end_to_end(clip_dir, tmp_path):
    import json

    from hf_ext.cli import main

    args = ["--clip", str(clip_dir), "--n", "2", "--steps", "1", "--text-weight", "5", "--no-progress"]
    assert main(["multifusion", "eval", *args, "--out", str(tmp_path / "mcc")]) == 0
    res = json.loads((tmp_path / "mcc" / "mcc_results.json").read_text())
    # the pre-0.2 script and its --out FILE still work, with a warning
    from hf_ext.diffusion.multifusion.evaluation import main as script_main

    with pytest.warns(FutureWarning, match="multifusion.evaluation is deprecated"):
        assert script_main([*args, "--out", str(tmp_path / "mcc.json")]) == 0
    assert json.loads((tmp_path / "mcc.json").read_text())["text"] == res["text"]
    assert res["n"] == 2 and 0 <= res["text"] <= 1 and 0 <= res["multimodal"] <= 1
    assert len(res["text_per_prompt"]) == 2 and set(res["multilingual"]) == {"de", "fr", "it", "es"}
