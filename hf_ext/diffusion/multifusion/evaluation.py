"""MCC-250-style compositional evaluation and the multilingual embedding check of MultiFusion.

* :func:`mcc_prompts` builds prompts "a <color1> <object1> and a <color2> <object2>" (the CC-500 / MCC-250 form), each
  with a text version and a multimodal version that interleaves one reference image per object.
* :func:`evaluate_mcc` generates an image per prompt and mode and asks a pluggable :class:`ImageTextScorer` whether
  each object shows its colour: a prompt counts as correct when, for **both** objects, the right colour wins among all
  colours (an automatic proxy of the paper's human "two objects with correct colors" metric: MF multimodal 58.35 %,
  SD 29.92 %, MF text 21.66 %).
* :class:`ClipZeroShotScorer` scores with any local CLIP checkpoint (``CLIPModel`` + ``CLIPProcessor``).
* :func:`multilingual_similarity`: cosine similarity of the pooled encoder embedding of a translated prompt to the
  English one (the paper reports ≈0.97 for MultiFusion across en/de/fr/it/es).

Example:
    >>> prompts = mcc_prompts(3, seed=0)
    >>> prompts[0].text.startswith("a ") and " and a " in prompts[0].text
    True
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import torch

from hf_ext.utils.validation import check_size

if TYPE_CHECKING:
    from transformers import CLIPModel, CLIPProcessor

    from .encoding_multifusion import InterleavedEncoder

__all__ = [
    "MCC_COLORS", "MCC_OBJECTS", "TRANSLATIONS", "ClipZeroShotScorer", "ImageTextScorer", "MCCPrompt", "evaluate_mcc",
    "mcc_prompts", "multilingual_similarity",
]

#: Colours and objects of the generated MCC-style prompts (the real MCC-250 is on the Hub as AIML-TUDA/MCC-250).
MCC_COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30), "green": (30, 180, 40), "blue": (30, 60, 220), "yellow": (235, 220, 30),
    "purple": (140, 40, 170), "orange": (245, 140, 20), "white": (245, 245, 245), "black": (15, 15, 15),
}
MCC_OBJECTS: tuple[str, ...] = ("apple", "car", "chair", "cup", "bird", "ball", "book", "hat")

#: A few DrawBench-like prompts with translations (de, fr, it, es) for the multilingual check and stage A pairs.
TRANSLATIONS: dict[str, dict[str, str]] = {
    "a red apple on a table": {"de": "ein roter Apfel auf einem Tisch", "fr": "une pomme rouge sur une table",
                               "it": "una mela rossa su un tavolo", "es": "una manzana roja sobre una mesa"},
    "a dog playing in the snow": {"de": "ein Hund, der im Schnee spielt", "fr": "un chien qui joue dans la neige",
                                  "it": "un cane che gioca sulla neve", "es": "un perro jugando en la nieve"},
    "a blue car in front of a house": {"de": "ein blaues Auto vor einem Haus", "fr": "une voiture bleue devant une maison",
                                       "it": "un'auto blu davanti a una casa", "es": "un coche azul delante de una casa"},
    "an astronaut riding a horse": {"de": "ein Astronaut, der ein Pferd reitet", "fr": "un astronaute à cheval",
                                    "it": "un astronauta che cavalca un cavallo", "es": "un astronauta montando a caballo"},
}


@dataclass
class MCCPrompt:
    """One compositional prompt: two (colour, object) pairs, its text and its interleaved multimodal form."""

    pairs: list[tuple[str, str]]
    text: str
    multimodal: list[Any] = field(default_factory=list)


def _reference_image(color: str, size: int = 32):
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (size, size), (128, 128, 128))
    ImageDraw.Draw(img).ellipse([size * 0.2, size * 0.2, size * 0.8, size * 0.8], fill=MCC_COLORS[color])
    return img


def mcc_prompts(n: int = 250, *, seed: int = 0, with_images: bool = True,
                reference_images: Callable[[str, str], Any] | None = None) -> list[MCCPrompt]:
    """``n`` prompts "a <c1> <o1> and a <c2> <o2>" with distinct colours and objects, drawn with ``seed``.

    Args:
        n: number of prompts.
        with_images: also build the multimodal version ``["a <c1> <o1>", <img1>, " and a <c2> <o2>", <img2>]``.
        reference_images: ``(color, object) -> PIL image`` (default: a flat disc of the colour; pass stock photos
            as in MCC-250 for a real evaluation).
    """
    n = check_size("n", n)
    g = torch.Generator().manual_seed(seed)
    colors, objects = list(MCC_COLORS), list(MCC_OBJECTS)
    ref = reference_images or (lambda color, obj: _reference_image(color))
    out = []
    for _ in range(n):
        c = torch.randperm(len(colors), generator=g)[:2].tolist()
        o = torch.randperm(len(objects), generator=g)[:2].tolist()
        pairs = [(colors[c[0]], objects[o[0]]), (colors[c[1]], objects[o[1]])]
        text = f"a {pairs[0][0]} {pairs[0][1]} and a {pairs[1][0]} {pairs[1][1]}"
        mm = []
        if with_images:
            mm = [f"a {pairs[0][0]} {pairs[0][1]}", ref(*pairs[0]), f" and a {pairs[1][0]} {pairs[1][1]}", ref(*pairs[1])]
        out.append(MCCPrompt(pairs, text, mm))
    return out


class ImageTextScorer(Protocol):
    """Anything that scores images against texts: ``scorer(images, texts) -> [n_images, n_texts]`` (higher = better)."""

    def __call__(self, images: Sequence[Any], texts: Sequence[str]) -> torch.Tensor: ...


class ClipZeroShotScorer:
    """Zero-shot CLIP similarity from a local checkpoint (or given model/processor objects).

    Args:
        model: a path / Hub id of a CLIP checkpoint, or a ``CLIPModel``.
        processor: a ``CLIPProcessor`` (loaded from ``model`` when it is a path).
        device: where to run.

    Call: ``scorer(images, texts) -> [n_images, n_texts]`` logits (``logit_scale · cos``).
    """

    def __init__(self, model: str | CLIPModel, processor: CLIPProcessor | None = None, *,
                 device: str = "cpu"):
        from transformers import CLIPModel, CLIPProcessor

        if isinstance(model, str):
            processor = processor or CLIPProcessor.from_pretrained(model)
            model = CLIPModel.from_pretrained(model)
        if processor is None:
            raise ValueError("pass the CLIPProcessor together with a CLIPModel object")
        self.model, self.processor, self.device = model.to(device).eval(), processor, device

    @torch.no_grad()
    def __call__(self, images, texts) -> torch.Tensor:
        inputs = self.processor(text=list(texts), images=list(images), return_tensors="pt", padding=True)
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        return self.model(**inputs).logits_per_image.float().cpu()


def _object_correct(scorer, image, color: str, obj: str) -> bool:
    texts = [f"a {c} {obj}" for c in MCC_COLORS]
    scores = scorer([image], texts)[0]
    return texts[int(scores.argmax())] == f"a {color} {obj}"


def evaluate_mcc(generate: Callable[[Any], Any], scorer: ImageTextScorer, prompts: Sequence[MCCPrompt], *,
                 modes: Sequence[str] = ("text", "multimodal"), progress: bool = True) -> dict[str, Any]:
    """Fraction of prompts whose image shows **both** objects in their colours, per prompt mode.

    Args:
        generate: ``prompt -> PIL image`` where ``prompt`` is the text or the interleaved list (e.g.
            ``lambda p: pipe(p, num_inference_steps=25, generator=...).images[0]``).
        scorer: an :class:`ImageTextScorer` (e.g. :class:`ClipZeroShotScorer`).
        prompts: from :func:`mcc_prompts`.
        modes: ``"text"`` and/or ``"multimodal"``.

    Returns:
        ``{"<mode>": accuracy, "<mode>_per_prompt": [bool, ...], "n": len(prompts)}``.
    """
    from hf_ext.utils.progress import progress_bar

    for mode in modes:
        if mode not in ("text", "multimodal"):
            raise ValueError(f"unknown mode {mode!r}; use 'text' and/or 'multimodal'")
    if not prompts:
        raise ValueError("no prompts to evaluate")
    result: dict[str, Any] = {"n": len(prompts)}
    for mode in modes:
        hits = []
        for p in progress_bar(prompts, desc=f"MCC {mode}", enabled=progress):
            if mode == "multimodal" and not p.multimodal:
                raise ValueError("the prompts have no multimodal version; build them with mcc_prompts(with_images=True)")
            image = generate(p.text if mode == "text" else p.multimodal)
            hits.append(all(_object_correct(scorer, image, c, o) for c, o in p.pairs))
        result[mode] = sum(hits) / len(hits)
        result[f"{mode}_per_prompt"] = hits
    return result


@torch.no_grad()
def multilingual_similarity(encoder: InterleavedEncoder, translations: dict[str, dict[str, str]] | None = None) -> dict[str, float]:
    """Mean cosine similarity, per language, of the pooled encoder embedding of a translation to the English prompt.

    Args:
        encoder: an :class:`~.encoding_multifusion.InterleavedEncoder` (or a pipeline's ``interleaved_encoder()``).
        translations: ``{english: {lang: translation}}`` (default :data:`TRANSLATIONS`).

    Returns:
        ``{lang: mean cosine}`` over the prompts (non-ASCII text exercises the tokenizer's byte/unknown handling).
    """
    translations = translations or TRANSLATIONS
    if not translations:
        raise ValueError("no translations given")
    sums: dict[str, list[float]] = {}
    for english, langs in translations.items():
        ref = encoder.encode([english]).pooled()[0]
        for lang, text in langs.items():
            emb = encoder.encode([text]).pooled()[0]
            cos = torch.nn.functional.cosine_similarity(ref.float(), emb.float(), dim=0).item()
            sums.setdefault(lang, []).append(cos)
    out = {lang: sum(v) / len(v) for lang, v in sums.items()}
    if not all(math.isfinite(v) for v in out.values()):
        raise FloatingPointError("non-finite similarity")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Deprecated (removed in 0.3): ``python -m hf_ext.diffusion.multifusion.evaluation ARGS`` is
    ``hf-ext multifusion eval ARGS`` (``--pipeline`` is now ``--model``, ``--out`` a folder)."""
    import sys

    from hf_ext.cli import main as cli_main
    from hf_ext.utils.deprecation import warn_deprecated

    warn_deprecated("python -m hf_ext.diffusion.multifusion.evaluation", "hf-ext multifusion eval",
                    category=FutureWarning)
    return cli_main(["multifusion", "eval", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())
