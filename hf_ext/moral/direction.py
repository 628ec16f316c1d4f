"""MoralDirection (Schramowski et al., NMI 2022; multilingual: Hämmerl et al., ACL Findings 2023).

The moral direction of a sentence encoder is the first principal component of the embeddings of 64 atomic
verbs, each embedded as the mean of its 10 question templates ("Is it ok to kill?", "Should I kill?", …) or,
for ar/cs/de/zh, of the 10 machine-translated questions. A text's moral score is its embedding projected on
that direction:

    score(x) = (v · (e(x) − μ)) / norm,    v = sign · PC1,   norm = max_i |v · (e(verb_i) − μ)|

with μ the mean of the 64 verb vectors. This module differs from the reference code in one deliberate way:
the sign is **explicit** — PC1 is flipped so that the fit set's "kill" scores < 0 — instead of depending on
sklearn's version-dependent SVD sign plus a clustering heuristic. Scores are not clipped: the fit verbs lie
in [−1, 1] (max |score| = 1) and out-of-sample texts may exceed it.

Example:
    >>> from hf_ext.moral import MoralDirection
    >>> md = MoralDirection.bundled()  # the shipped direction of all-MiniLM-L6-v2 (offline)
    >>> md.score(["kill people", "smile at my friend"], use_templates=True)
    array([-0.86..., 0.87...])
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hf_ext.utils.loading import load_safetensors, read_json, require_keys
from hf_ext.utils.logging import get_logger
from hf_ext.utils.validation import check_float, check_size

from . import resources
from .encoders import SentenceEncoder, as_encoder, check_texts

if TYPE_CHECKING:
    from huggingface_hub import ModelCard
    from numpy.typing import ArrayLike
    from transformers import PreTrainedTokenizerBase

    from .encoders import EncoderLike

logger = get_logger(__name__)

__all__ = ["BUNDLED_DIRECTION", "MoralDirection"]

FORMAT = "hf_ext.moral_direction"
FORMAT_VERSION = 1
#: Stem of the shipped direction of the bundled all-MiniLM-L6-v2 in ``hf_ext/moral/data/``.
BUNDLED_DIRECTION = "minilm_l6_v2_en"
#: File stem of a saved direction (`<stem>.json` + `<stem>.safetensors`) in a folder.
DEFAULT_STEM = "moral_direction"


def _as_float_matrix(x: Any, name: str) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    arr = np.asarray(x, dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or inf values")
    return arr


class MoralDirection:
    """A fitted moral direction: PC1 of the verb embeddings, oriented (kill < 0) and normalised (max |fit score| = 1).

    Build one with :meth:`fit` (embeds the fit set with any encoder) or :meth:`from_embeddings` (you give the
    verb embeddings); load one with :meth:`load` or :meth:`bundled`.

    Args:
        direction: ``(dim,)`` the oriented unit PC1 ``v``.
        mean: ``(dim,)`` the PCA centre ``μ`` (mean of the fit vectors).
        norm: the normalisation ``max_i |v · (x_i − μ)|`` over the fit set (> 0).
        components: ``(k, dim)`` the first k principal components (row 0 = ``direction``), for plots.
        explained_variance_ratio: ``(k,)`` share of the fit set's variance of each component.
        language: language of the fit questions (``"en"``, ``"ar"``, ``"cs"``, ``"de"``, ``"zh"`` or user-defined).
        encoder_name: name/path of the encoder it was fitted with (informative, saved).
        fit_phrases: the English keys of the fit set (64 atomic verbs by default).
        fit_scores: ``(n_fit,)`` their scores (in [−1, 1], ``min`` or ``max`` is ±1).
        anchor: the fit phrase whose score is made negative (default ``"kill"``).
        encoder: the :class:`~hf_ext.moral.encoders.SentenceEncoder` used by :meth:`score` (not saved).
        metadata: free JSON-serialisable dict saved with the direction (e.g. evaluation results).
    """

    def __init__(self, direction: ArrayLike, mean: ArrayLike, norm: float, *, components: ArrayLike | None = None,
                 explained_variance_ratio: ArrayLike | None = None, language: str = "en",
                 encoder_name: str | None = None, fit_phrases: Sequence[str] | None = None,
                 fit_scores: ArrayLike | None = None, anchor: str = "kill", encoder: EncoderLike | None = None,
                 metadata: dict | None = None):
        self.direction = _as_float_matrix(direction, "direction").reshape(-1)
        self.mean = _as_float_matrix(mean, "mean").reshape(-1)
        if self.direction.shape != self.mean.shape:
            raise ValueError(f"direction {self.direction.shape} and mean {self.mean.shape} must have the same shape")
        self.norm = check_float("norm", norm, min=0, min_open=True)
        self.components = (_as_float_matrix(components, "components") if components is not None
                           else self.direction[None].copy())
        self.explained_variance_ratio = (np.asarray(explained_variance_ratio, dtype=np.float64)
                                         if explained_variance_ratio is not None else None)
        self.language = language
        self.encoder_name = encoder_name
        self.fit_phrases = list(fit_phrases) if fit_phrases is not None else None
        self.fit_scores = np.asarray(fit_scores, dtype=np.float64) if fit_scores is not None else None
        self.anchor = anchor
        self.encoder = as_encoder(encoder) if encoder is not None else None
        self.metadata = dict(metadata or {})

    # ------------------------------------------------------------------------------------------------ fitting

    @property
    def dim(self) -> int:
        """Embedding size the direction expects."""
        return int(self.direction.shape[0])

    @classmethod
    def from_embeddings(cls, embeddings: ArrayLike, phrases: Sequence[str] | None = None, *, anchor: str = "kill",
                        n_components: int = 5, language: str = "en", encoder_name: str | None = None,
                        encoder: SentenceEncoder | None = None) -> MoralDirection:
        """Fit on given embeddings of the fit set.

        Args:
            embeddings: ``(n, dim)`` one vector per phrase, or ``(n, T, dim)`` T template embeddings per phrase
                (averaged over T first, as the reference code does).
            phrases: the n phrase names (default: the 64 :func:`~hf_ext.moral.resources.atomic_verbs`, sorted).
            anchor: the phrase whose score is made negative (must be in ``phrases``).
            n_components: principal components kept (for plots; the direction is PC1). The reference uses 5.
            language, encoder_name, encoder: recorded / attached.

        Returns:
            The fitted :class:`MoralDirection`; ``fit_scores`` are the phrases' scores.

        Raises:
            ValueError: wrong shapes, fewer than 2 phrases, anchor missing, or a degenerate fit set (all vectors
                equal, or the anchor exactly at the centre so the orientation is undefined).

        Example:
            >>> rng = np.random.default_rng(0)
            >>> s = np.linspace(-1, 1, 64); u = rng.normal(size=16)
            >>> X = s[:, None] * u + 0.01 * rng.normal(size=(64, 16))
            >>> md = MoralDirection.from_embeddings(X, [f"v{i}" for i in range(63)] + ["kill"], anchor="v0")
            >>> round(float(np.abs(md.fit_scores).max()), 6), bool(md.fit_scores[0] < 0)
            (1.0, True)
        """
        x = _as_float_matrix(embeddings, "embeddings")
        if x.ndim == 3:
            x = x.mean(axis=1)
        if x.ndim != 2:
            raise ValueError(f"embeddings must be (n, dim) or (n, templates, dim), got shape {x.shape}")
        phrases = list(phrases) if phrases is not None else resources.atomic_verbs()
        if len(phrases) != x.shape[0]:
            raise ValueError(f"got {x.shape[0]} embedding rows for {len(phrases)} phrases; they must match")
        if x.shape[0] < 2:
            raise ValueError(f"need at least 2 fit phrases, got {x.shape[0]}")
        if anchor not in phrases:
            raise ValueError(f"anchor {anchor!r} is not among the fit phrases; pass anchor= one of them (e.g. 'kill')")
        check_size("n_components", n_components)
        mu = x.mean(axis=0)
        xc = x - mu
        # PCA (no whitening) = SVD of the centred data; numpy's SVD sign is arbitrary, fixed below.
        _, sv, vt = np.linalg.svd(xc, full_matrices=False)
        if sv[0] <= 1e-12 * max(1.0, float(np.abs(x).max())):
            raise ValueError("the fit embeddings are all identical (zero variance): the encoder ignores its input")
        k = min(n_components, vt.shape[0])
        comps = vt[:k].copy()
        y0 = xc @ comps[0]
        a = phrases.index(anchor)
        if abs(y0[a]) <= 1e-12 * np.abs(y0).max():
            raise ValueError(f"the anchor {anchor!r} projects onto the centre of PC1: the orientation is undefined; "
                             "choose another anchor")
        if y0[a] > 0:  # explicit orientation: the anchor ("kill") scores < 0
            comps[0] = -comps[0]
            y0 = -y0
        norm = float(np.abs(y0).max())
        var = sv**2
        evr = var[:k] / var.sum()
        return cls(comps[0], mu, norm, components=comps, explained_variance_ratio=evr, language=language,
                   encoder_name=encoder_name, fit_phrases=phrases, fit_scores=y0 / norm, anchor=anchor, encoder=encoder)

    @classmethod
    def fit(cls, encoder: EncoderLike, language: str = "en", *, tokenizer: PreTrainedTokenizerBase | None = None,
            phrases: Sequence[str] | None = None, questions: Mapping[str, Sequence[str]] | None = None,
            anchor: str = "kill", n_components: int = 5, batch_size: int | None = None, device: str | None = None,
            progress: bool = True) -> MoralDirection:
        """Embed the fit set with ``encoder`` and fit the direction.

        Each of the 64 atomic verbs is embedded as its 10 questions — the English templates for
        ``language="en"``, the shipped machine translations for ``"ar"``, ``"cs"``, ``"de"``, ``"zh"`` — and the
        10 embeddings are averaged; PCA on the 64 means; PC1 oriented so that ``anchor`` scores < 0; normalised
        by the largest |score| of the fit set.

        Args:
            encoder: anything :func:`~hf_ext.moral.encoders.as_encoder` accepts (a SentenceTransformer, a path
                or Hub id, ``"bundled"``, a transformers model + ``tokenizer``, a callable).
            language: language of the questions.
            tokenizer: tokenizer of a plain transformers ``encoder`` (mean pooling).
            phrases: English keys of the fit set (default the 64 atomic verbs).
            questions: your own questions, English key -> list of questions (any language; overrides the shipped
                ones for those keys, and allows languages that are not shipped).
            anchor, n_components: see :meth:`from_embeddings`.
            batch_size: encoder batch size; device: where a model loaded from a path goes.
            progress: show a progress bar while embedding.

        Raises:
            ValueError: unknown language (without ``questions``), a phrase without questions, questions lists of
                different lengths.

        Example:
            >>> md = MoralDirection.fit("bundled", progress=False)
            >>> bool(md.fit_scores[md.fit_phrases.index("kill")] < 0)
            True
        """
        if not isinstance(language, str) or not language:
            raise ValueError(f"language must be a language code such as 'en' or 'de', got {language!r}")
        if language not in resources.LANGUAGES and not questions:
            raise ValueError(f"language {language!r} has no shipped questions; use one of "
                             f"{', '.join(resources.LANGUAGES)} or pass questions={{english_phrase: [...]}}")
        enc = as_encoder(encoder, tokenizer, device=device, **({"batch_size": batch_size} if batch_size else {}))
        phrases = list(phrases) if phrases is not None else resources.atomic_verbs()
        groups = [cls._questions_for(p, language, questions) for p in phrases]
        sizes = {len(g) for g in groups}
        if len(sizes) != 1:
            raise ValueError(f"every fit phrase needs the same number of questions, got sizes {sorted(sizes)}")
        flat = [q for g in groups for q in g]
        emb = enc.encode(flat, batch_size=batch_size, progress=progress)
        emb = emb.reshape(len(phrases), sizes.pop(), emb.shape[-1])
        md = cls.from_embeddings(emb, phrases, anchor=anchor, n_components=n_components, language=language,
                                 encoder_name=enc.name, encoder=enc)
        md.metadata["fit_questions"] = "templates" if language == "en" and not questions else (
            "user questions" if questions else "translated questions (KathyHaem/multiling-moral-bias)")
        md.metadata["fit_questions_sha256"] = hashlib.sha256("\n".join(flat).encode("utf-8")).hexdigest()
        return md

    @staticmethod
    def _questions_for(phrase: str, language: str, questions: Mapping[str, Sequence[str]] | None) -> list[str]:
        if questions and phrase in questions:
            qs = questions[phrase]
            if isinstance(qs, str) or not qs:
                raise ValueError(f"questions[{phrase!r}] must be a non-empty list of strings, got {qs!r}")
            return list(qs)
        if language not in resources.LANGUAGES:
            raise ValueError(f"no questions for {phrase!r} in language {language!r}: add it to questions=")
        return resources.template_questions(phrase, language)

    # ------------------------------------------------------------------------------------------------ scoring

    def project(self, embeddings: ArrayLike) -> np.ndarray:
        """Scores of given embeddings: ``(n, dim)`` -> ``(n,)`` (``(dim,)`` -> scalar array), unclipped.

        Raises:
            ValueError: the embedding size differs from :attr:`dim` (a different encoder).
        """
        e = _as_float_matrix(embeddings, "embeddings")
        if e.shape[-1] != self.dim:
            raise ValueError(
                f"encoder output dimension {e.shape[-1]} does not match this direction's dimension {self.dim} "
                f"(fitted with {self.encoder_name!r}); use the encoder it was fitted with or fit a new direction"
            )
        return (e - self.mean) @ self.direction / self.norm

    def pca_coordinates(self, embeddings: ArrayLike) -> np.ndarray:
        """``(n, dim)`` -> ``(n, k)`` coordinates on the k stored components, divided by :attr:`norm` (column 0 = score)."""
        e = _as_float_matrix(embeddings, "embeddings")
        self.project(e[:1] if e.ndim == 2 else e)  # dimension check
        return (e - self.mean) @ self.components.T / self.norm

    def _encoder(self, encoder) -> SentenceEncoder:
        enc = as_encoder(encoder) if encoder is not None else self.encoder
        if enc is None:
            raise ValueError("this MoralDirection has no encoder attached: pass encoder=... to score(), or load it "
                             "with MoralDirection.load(path, encoder=...) / MoralDirection.bundled()")
        return enc

    def embed(self, texts: Sequence[str], use_templates: bool = False, *, encoder: EncoderLike | None = None,
              batch_size: int | None = None, progress: bool = False) -> np.ndarray:
        """Embeddings used for scoring, ``(n, dim)``: each text alone, or the mean of its 10 questions."""
        texts = check_texts(texts)
        if not use_templates:
            return self._encoder(encoder).encode(texts, batch_size=batch_size, progress=progress)
        groups = [resources.template_questions(t, self.language) for t in texts]
        return self._embed_groups(groups, encoder, batch_size, progress)

    def _embed_groups(self, groups, encoder, batch_size, progress) -> np.ndarray:
        enc = self._encoder(encoder)
        flat = [q for g in groups for q in g]
        emb = enc.encode(flat, batch_size=batch_size, progress=progress)
        bounds = np.cumsum([0] + [len(g) for g in groups])
        return np.stack([emb[bounds[i]:bounds[i + 1]].astype(np.float64).mean(0) for i in range(len(groups))])

    def score(self, texts: Sequence[str], use_templates: bool = False, *, encoder: EncoderLike | None = None,
              batch_size: int | None = None, progress: bool = False) -> np.ndarray:
        """Moral scores of ``texts``, ``(n,)`` float64, unclipped (the fit verbs lie in [−1, 1]).

        Args:
            texts: list of strings.
            use_templates: ``False`` (default): embed each text as is (action phrases, MFQ statements, sentences,
                subtitles; for action phrases it gets more signs right than the templates on both user studies and
                on hf_ext's everyday actions: :func:`hf_ext.moral.measurement.measure_scorings`, README).
                ``True``: treat each text as an action phrase ("kill people") and average the embeddings of its
                10 questions — the English templates, or for a non-English direction the shipped translated
                questions of that English phrase (use :meth:`score_questions` for your own questions). This is
                how the user-study actions are scored.
            encoder: overrides the attached encoder.
            batch_size, progress: passed to the encoder.

        Raises:
            ValueError: empty ``texts``; no encoder; embedding size mismatch; a phrase without translations.
            TypeError: ``texts`` is a single string or contains non-strings.

        Example:
            >>> md = MoralDirection([1.0, 0.0], [0.0, 0.0], 2.0, encoder=lambda t: [[len(x), 0.0] for x in t])
            >>> md.score(["ab", "abcdef"]).tolist()  # projections 2 and 6 over norm 2: not clipped
            [1.0, 3.0]
        """
        return self.project(self.embed(texts, use_templates, encoder=encoder, batch_size=batch_size, progress=progress))

    __call__ = score

    def score_questions(self, groups: Sequence[Sequence[str]], *, encoder: EncoderLike | None = None,
                        batch_size: int | None = None, progress: bool = False) -> np.ndarray:
        """Score each group of questions by the mean of their embeddings, ``(n_groups,)`` (any language).

        Example:
            >>> md = MoralDirection.bundled()
            >>> md.score_questions([["Should I kill?", "May I kill?"], ["Should I smile?", "May I smile?"]]).shape
            (2,)
        """
        if isinstance(groups, str) or not groups:
            raise ValueError("groups must be a non-empty list of lists of questions")
        groups = [check_texts(g) for g in groups]
        return self.project(self._embed_groups(groups, encoder, batch_size, progress))

    # ------------------------------------------------------------------------------------------------ persistence

    def config(self) -> dict[str, Any]:
        """The JSON part of :meth:`save` (everything but the arrays)."""
        from .. import __version__

        return {
            "format": FORMAT, "format_version": FORMAT_VERSION, "hf_ext_version": __version__,
            "dim": self.dim, "norm": self.norm, "language": self.language, "encoder_name": self.encoder_name,
            "anchor": self.anchor, "orientation": f"PC1 flipped so that the fit phrase {self.anchor!r} scores < 0",
            "normalisation": "max |score| over the fit phrases = 1; scores are not clipped",
            "n_components": int(self.components.shape[0]),
            "explained_variance_ratio": (self.explained_variance_ratio.tolist()
                                         if self.explained_variance_ratio is not None else None),
            "fit_phrases": self.fit_phrases,
            "fit_scores": self.fit_scores.tolist() if self.fit_scores is not None else None,
            "metadata": self.metadata,
        }

    @staticmethod
    def _paths(path: str | os.PathLike) -> tuple[Path, Path]:
        p = Path(path)
        if p.suffix in (".json", ".safetensors"):
            return p.with_suffix(".json"), p.with_suffix(".safetensors")
        return p / f"{DEFAULT_STEM}.json", p / f"{DEFAULT_STEM}.safetensors"

    def save(self, path: str | os.PathLike) -> Path:
        """Write ``<path>/moral_direction.json`` + ``.safetensors`` (or ``path``'s stem if it ends in ``.json``).

        No pickle: arrays go to safetensors (float64), the rest to JSON. Returns the JSON path.

        Example:
            >>> md = MoralDirection.bundled()
            >>> md.save("runs/md_minilm")
            PosixPath('runs/md_minilm/moral_direction.json')
        """
        from safetensors.numpy import save_file

        from hf_ext.utils.saving import atomic_directory

        cfg_path, st_path = self._paths(Path(path).expanduser())
        tensors = {"direction": self.direction, "mean": self.mean, "components": self.components}
        # staged and renamed in together: an interrupted save leaves the previous direction, never a mixed pair
        with atomic_directory(cfg_path.parent) as staging:
            save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(staging / st_path.name),
                      metadata={"format": FORMAT, "format_version": str(FORMAT_VERSION)})
            (staging / cfg_path.name).write_text(json.dumps(self.config(), indent=1, ensure_ascii=False) + "\n",
                                                 encoding="utf-8")
        return cfg_path

    @classmethod
    def load(cls, path: str | os.PathLike, encoder: EncoderLike | None = None, *,
             tokenizer: PreTrainedTokenizerBase | None = None, device: str | None = None) -> MoralDirection:
        """Load a direction written by :meth:`save`; optionally attach ``encoder`` (checked against the saved size).

        Raises:
            FileNotFoundError: missing files. ValueError: not a MoralDirection file, or the encoder's output
            dimension differs from the saved one.
        """
        cfg_path, st_path = cls._paths(path)
        for p in (cfg_path, st_path):
            if not p.is_file():
                raise FileNotFoundError(f"{p} does not exist; MoralDirection.save() writes a .json and a .safetensors")
        from hf_ext.utils.saving import verify_manifest

        verify_manifest(cfg_path.parent)
        cfg = read_json(cfg_path, required=("format",))
        if cfg["format"] != FORMAT:
            raise ValueError(f"{cfg_path} is not a MoralDirection file (format {cfg.get('format')!r}, expected {FORMAT!r})")
        if int(cfg.get("format_version", 0)) > FORMAT_VERSION:
            raise ValueError(f"{cfg_path} has format_version {cfg['format_version']}; this hf_ext reads up to "
                             f"{FORMAT_VERSION}: upgrade hf-ext")
        require_keys(cfg, ("norm", "dim"), cfg_path)
        arrays = load_safetensors(st_path, framework="np")
        require_keys(arrays, ("direction", "mean"), st_path)
        md = cls(arrays["direction"], arrays["mean"], cfg["norm"], components=arrays.get("components"),
                 explained_variance_ratio=cfg.get("explained_variance_ratio"), language=cfg.get("language", "en"),
                 encoder_name=cfg.get("encoder_name"), fit_phrases=cfg.get("fit_phrases"),
                 fit_scores=cfg.get("fit_scores"), anchor=cfg.get("anchor", "kill"), metadata=cfg.get("metadata"))
        if md.dim != int(cfg["dim"]):
            raise ValueError(f"{st_path} holds a {md.dim}-d direction but {cfg_path} says dim={cfg['dim']}")
        if encoder is not None:
            md.attach(encoder, tokenizer=tokenizer, device=device)
        return md

    def attach(self, encoder: EncoderLike, *, tokenizer: PreTrainedTokenizerBase | None = None,
               device: str | None = None) -> MoralDirection:
        """Attach the encoder used by :meth:`score` (checks its output size when known). Returns ``self``."""
        enc = as_encoder(encoder, tokenizer, device=device)
        if enc.dim is not None and int(enc.dim) != self.dim:
            raise ValueError(
                f"encoder output dimension {enc.dim} ({enc.name!r}) does not match this direction's dimension "
                f"{self.dim} (fitted with {self.encoder_name!r}); use that encoder or fit a new direction"
            )
        self.encoder = enc
        return self

    @classmethod
    def bundled(cls, device: str | None = None) -> MoralDirection:
        """The shipped English direction of the bundled all-MiniLM-L6-v2, with that encoder attached (offline).

        Example:
            >>> md = MoralDirection.bundled()
            >>> md.score(["Someone was cruel."]) < 0
            array([ True])
        """
        from .encoders import bundled_encoder

        return cls.load(resources.DATA_DIR / f"{BUNDLED_DIRECTION}.json", encoder=bundled_encoder(device=device))

    def model_card(self, *, model_name: str | None = None, repo_id: str | None = None, file_stem: str | None = None,
                   mfq: Mapping[str, float] | None = None, **context: Any) -> ModelCard:
        """A :class:`huggingface_hub.ModelCard` for this direction (template ``model_cards/moral_direction.md.j2``).

        The user-study correlations stored in ``metadata["user_study"]`` (if any) go into the card's table and
        its ``model-index``. Extra ``context`` goes to the template (``description``, ``intended_use`` …).

        Example:
            >>> path = MoralDirection.bundled().save("runs/md_minilm")
            >>> card = MoralDirection.load(path).model_card(model_name="md-minilm")
            >>> card.save("README.md")
        """
        from ..hub import render_model_card

        cfg = self.config()
        user_study = self.metadata.get("user_study") or None
        name = model_name or f"moral-direction-{(self.encoder_name or 'encoder').split('/')[-1]}-{self.language}"
        evals = [{"task_type": "text-classification", "task_name": "moral score vs human judgement",
                  "dataset_type": f"user-study-{s}", "dataset_name": f"Schramowski et al. 2022 user study ({s})",
                  "metric_type": "pearsonr", "metric_name": "Pearson r", "metric_value": round(float(r["r"]), 4)}
                 for s, r in (user_study or {}).items()]
        card_data = {"license": "apache-2.0", "language": [self.language],
                     "tags": ["moral-direction", "sentence-embeddings", "hf_ext"], "model_name": name,
                     "eval_results": evals or None}
        if self.encoder_name and "/" in self.encoder_name and not os.path.exists(self.encoder_name):
            card_data["base_model"] = self.encoder_name
        order = np.argsort(self.fit_scores) if self.fit_scores is not None else []
        top = [[self.fit_phrases[i], float(self.fit_scores[i])] for i in list(order[:3]) + list(order[-3:])]
        context.setdefault("description", f"A moral direction (MoralDirection) of the sentence encoder "
                                          f"`{self.encoder_name}` for language `{self.language}`, fitted with hf_ext.")
        context.setdefault("intended_use", "Research on the moral and social norms that sentence encoders reflect: "
                                           "scoring actions and sentences on a good-bad axis, comparing models and "
                                           "languages. Not a tool for judging people or for automated moderation.")
        context.setdefault("limitations", "The direction reflects the encoder's training data, not a normative "
                                          "ground truth; it is sensitive to wording and negation, and scores out of "
                                          "the fit set are not clipped to [-1, 1]. Translations were machine-made.")
        return render_model_card("moral_direction", card_data=card_data, md=cfg, user_study=user_study, mfq=mfq,
                                 top=top, model_name=name, repo_id=repo_id, file_stem=file_stem, **context)

    def __repr__(self) -> str:
        return (f"MoralDirection(dim={self.dim}, language={self.language!r}, encoder={self.encoder_name!r}, "
                f"norm={self.norm:.6g}, anchor={self.anchor!r})")
