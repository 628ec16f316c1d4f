"""Model cards rendered from the ``model_cards/`` templates, and self-contained Hub exports.

* :func:`render_model_card` renders a Jinja template shipped in ``hf_ext.model_cards`` (the repository's
  ``model_cards/`` folder) into a :class:`huggingface_hub.ModelCard` whose YAML front matter comes from a
  :class:`huggingface_hub.ModelCardData` (licence, base model, tags, ``eval_results`` → ``model-index``), with a
  ``library_name`` and ``pipeline_tag`` the Hub knows (:mod:`hf_ext.card_metadata`).
  Component templates extend ``base.md.j2`` with ``{% extends "base.md.j2" %}`` and override its blocks.
* :func:`export_for_hub` saves a transformers model whose classes live in hf_ext (or in any package that
  builds on ``hf_ext``) so that it loads with ``trust_remote_code=True`` in an environment **without**
  hf_ext: transformers copies only the defining module files and their same-folder relative imports, so the
  ``hf_ext.*`` modules they import are vendored next to the weights and the imports rewritten to
  same-folder relative imports.

Example:
    >>> from hf_ext.hub import export_for_hub, render_model_card
    >>> model = tiny_causal_lm("llama", seed=0)
    >>> card = render_model_card("base", card_data={"license": "apache-2.0", "tags": ["scar"]},
    ...                          model_name="tiny-scar", description="A tiny SCAR model.")
    >>> export_for_hub(model, "out/tiny-scar", card=card)
    PosixPath('out/tiny-scar')
"""

from __future__ import annotations

import contextlib
import copy
import functools
import importlib.resources
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hf_ext.utils.logging import get_logger
from hf_ext.utils.saving import atomic_directory

from . import __version__
from .card_metadata import CARD_DEFAULTS, CardDefaults, derived_eval_results
from .vendoring import vendor_sources

if TYPE_CHECKING:  # pragma: no cover
    from huggingface_hub import ModelCard, ModelCardData
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

logger = get_logger(__name__)

__all__ = ["available_model_cards", "export_for_hub", "render_model_card"]

#: The package whose data files are the model-card templates (the repository's top-level ``model_cards/``).
TEMPLATE_PACKAGE = "hf_ext.model_cards"
TEMPLATE_SUFFIX = ".md.j2"
#: Dataset-card templates (not model cards) and the function that renders each.
DATASET_CARDS = {"mad_dataset": "hf_ext.mad.api.render_dataset_card"}
#: Template variables set by :func:`render_model_card` itself.
_RESERVED_CONTEXT = ("card_data", "data", "hf_ext_version", "title")


# ---------------------------------------------------------------------------------------------------------------
# Model cards
# ---------------------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _template_root():
    """The folder of the templates: ``hf_ext.model_cards`` when installed, else ``<checkout>/model_cards``."""
    try:
        return importlib.resources.files(TEMPLATE_PACKAGE)
    except ModuleNotFoundError:
        # A source checkout put on sys.path without installing it: the templates sit next to hf_ext/.
        checkout = Path(__file__).resolve().parent.parent / "model_cards"
        if checkout.is_dir():
            logger.debug("%s is not installed; reading model-card templates from %s", TEMPLATE_PACKAGE, checkout)
            return checkout
        raise FileNotFoundError(
            f"the model-card templates ({TEMPLATE_PACKAGE}) are missing from this hf_ext installation; "
            "reinstall hf-ext (pip install -e . in a checkout)"
        ) from None


def available_model_cards() -> list[str]:
    """Names of the shipped model-card templates (without the ``.md.j2`` suffix), sorted.

    Example:
        >>> "base" in available_model_cards()
        True
    """
    return sorted(p.name[: -len(TEMPLATE_SUFFIX)] for p in _template_root().iterdir()
                  if p.name.endswith(TEMPLATE_SUFFIX) and p.is_file())


def _template_file(template: str) -> str:
    if not isinstance(template, str):
        raise TypeError(f"template must be a template name such as 'base', got {type(template).__name__}")
    name = template if template.endswith(TEMPLATE_SUFFIX) else template + TEMPLATE_SUFFIX
    available = available_model_cards()
    if name[: -len(TEMPLATE_SUFFIX)] not in available:
        raise ValueError(f"unknown model-card template {template!r}; available templates: {available} "
                         f"(files {TEMPLATE_PACKAGE}/<name>{TEMPLATE_SUFFIX})")
    return name


@functools.lru_cache(maxsize=1)
def _environment():
    """A Jinja environment whose loader reads the template package, so that ``{% extends "base.md.j2" %}`` works."""
    import jinja2

    root = _template_root()

    def load(name: str):
        if "/" in name or "\\" in name or not name.endswith(TEMPLATE_SUFFIX):
            return None
        node = root.joinpath(name)
        if not node.is_file():
            return None
        return node.read_text(encoding="utf-8"), str(node), lambda: True

    return jinja2.Environment(loader=jinja2.FunctionLoader(load), autoescape=False, keep_trailing_newline=True,
                              trim_blocks=True, lstrip_blocks=True)


def _eval_results(results: Any) -> list:
    from huggingface_hub import EvalResult

    if isinstance(results, (EvalResult, Mapping)):
        results = [results]
    converted = []
    for i, result in enumerate(results):
        if isinstance(result, EvalResult):
            converted.append(result)
        elif isinstance(result, Mapping):
            try:
                converted.append(EvalResult(**result))
            except TypeError as err:
                raise ValueError(
                    f"card_data['eval_results'][{i}] = {dict(result)!r} is not a valid EvalResult ({err}); "
                    "it needs task_type, dataset_type, dataset_name, metric_type and metric_value"
                ) from err
        else:
            raise TypeError(f"card_data['eval_results'][{i}] must be a dict or huggingface_hub.EvalResult, "
                            f"got {type(result).__name__}")
    return converted


def _to_card_data(card_data: Mapping[str, Any] | ModelCardData, context: Mapping[str, Any],
                  defaults: CardDefaults, derived: list[dict[str, Any]]) -> ModelCardData:
    from huggingface_hub import ModelCardData

    if isinstance(card_data, ModelCardData):
        fields = copy.deepcopy(card_data).to_dict()  # never change the caller's object
        fields["eval_results"] = copy.deepcopy(card_data.eval_results)
        fields["model_name"] = card_data.model_name
        fields.pop("model-index", None)
    elif isinstance(card_data, Mapping):
        fields = dict(card_data)
    else:
        raise TypeError(f"card_data must be a dict or huggingface_hub.ModelCardData, got {type(card_data).__name__}")
    results = fields.get("eval_results") or derived
    if results:
        fields["eval_results"] = _eval_results(results)
        if not fields.get("model_name"):
            fields["model_name"] = context.get("model_name") if isinstance(context.get("model_name"), str) \
                else defaults.title
    fields.setdefault("library_name", None)
    fields.setdefault("pipeline_tag", None)
    data = ModelCardData(**fields)
    data.library_name = data.library_name or defaults.library_name
    data.pipeline_tag = data.pipeline_tag or defaults.pipeline_tag
    tags = list(data.tags or [])
    if "hf_ext" not in tags:
        data.tags = tags + ["hf_ext"]
    return data


def render_model_card(template: str, *, card_data: Mapping[str, Any] | ModelCardData | None = None,
                      **context: Any) -> ModelCard:
    """Render a shipped model-card template into a :class:`huggingface_hub.ModelCard`.

    Every template renders without arguments. The YAML front matter is ``card_data`` completed with the template's
    :data:`~hf_ext.card_metadata.CARD_DEFAULTS`: a ``library_name`` the Hub knows (``transformers``, or
    ``diffusers`` for the pipelines), a ``pipeline_tag`` and the ``hf_ext`` tag. ``eval_results`` become a
    ``model-index`` block; when none are given, the template's evaluation variables (e.g. SCAR's
    ``detection_auroc``) are turned into them (:func:`~hf_ext.card_metadata.derived_eval_results`), and the
    model-index is named after ``model_name`` or the template's title. Unlike ``ModelCard.from_template``, the
    template also sees the card data itself as ``data``. :func:`~hf_ext.card_metadata.check_card_metadata` checks the
    result offline.

    Args:
        template: a name from :func:`available_model_cards`, with or without the ``.md.j2`` suffix.
        card_data: a ``huggingface_hub.ModelCardData`` or a dict of its fields (``license``, ``base_model``,
            ``tags``, ``datasets``, ``model_name``, ``library_name``, ``pipeline_tag``, ``eval_results`` as dicts
            of ``EvalResult`` fields or ``EvalResult`` objects, …). Not modified. Default: none.
        **context: template variables. ``base`` uses ``model_name`` (title; defaults to card_data's, else the
            template's title), ``description``, ``repo_id``, ``auto_class`` (default: the template's, e.g.
            ``AutoModelForCausalLM``), ``remote_code``, ``intended_use``, ``limitations``, ``training_details``,
            ``evaluation_details`` and ``citation``; sections without content are left out. Component templates
            document theirs.

    Returns:
        The card; ``card.data`` is the parsed front matter, ``card.save("README.md")`` writes it.

    Raises:
        ValueError: unknown template (the message lists the available ones), a malformed eval result, or a
            context key reserved for the renderer (``card_data``, ``data``, ``hf_ext_version``, ``title``).

    Example:
        >>> card = render_model_card(
        ...     "base",
        ...     card_data={"license": "apache-2.0", "base_model": "gpt2", "model_name": "tiny",
        ...                "eval_results": [{"task_type": "text-generation", "dataset_type": "wikitext",
        ...                                  "dataset_name": "WikiText", "metric_type": "perplexity",
        ...                                  "metric_value": 42.0}]},
        ...     description="A tiny model.")
        >>> card.data.license, card.data.eval_results[0].metric_value, card.data.library_name
        ('apache-2.0', 42.0, 'transformers')
        >>> render_model_card("umup").text.splitlines()[1]
        '# u-μP model'
    """
    from huggingface_hub import ModelCard

    name = _template_file(template)
    stem = name[: -len(TEMPLATE_SUFFIX)]
    if stem in DATASET_CARDS:
        raise ValueError(f"{template!r} is a dataset card template; render it with {DATASET_CARDS[stem]}")
    reserved = sorted(set(_RESERVED_CONTEXT) & context.keys())
    if reserved:
        raise ValueError(f"template variables {reserved} are set by render_model_card itself; pass the card data "
                         "through card_data= and rename the other variables")
    defaults = CARD_DEFAULTS.get(stem, CARD_DEFAULTS["base"])
    data = _to_card_data({} if card_data is None else card_data, context, defaults,
                         derived_eval_results(stem, context))
    variables = {"model_name": data.model_name, "auto_class": defaults.auto_class, **context}
    if variables.get("auto_class") is None:
        variables["auto_class"] = defaults.auto_class or "AutoModel"
    text = _environment().get_template(name).render(card_data=data.to_yaml(), data=data, title=defaults.title,
                                                     hf_ext_version=__version__, **variables)
    return ModelCard(text)


# ---------------------------------------------------------------------------------------------------------------
# Hub export with vendored hf_ext code
# ---------------------------------------------------------------------------------------------------------------

#: Auto classes preferred when a model class is registered under several.
_PREFERRED_AUTO = ("AutoModelForCausalLM", "AutoModelForSeq2SeqLM", "AutoModelForMaskedLM",
                   "AutoModelForImageTextToText")
def _is_builtin(cls: type) -> bool:
    """Whether transformers itself defines ``cls`` (so it loads without remote code)."""
    return cls.__module__ == "transformers" or cls.__module__.startswith("transformers.")


def _model_auto_class(model_cls: type, config_cls: type) -> str:
    """The Auto class ``model_cls`` is registered under for ``config_cls``, else CausalLM/AutoModel by GenerationMixin."""
    from transformers import GenerationMixin
    from transformers.models.auto import modeling_auto

    found = []
    for name, auto in vars(modeling_auto).items():
        mapping = getattr(auto, "_model_mapping", None) if name.startswith("AutoModel") else None
        if mapping is None:
            continue
        try:
            registered = mapping[config_cls]
        except (KeyError, AttributeError):
            continue
        if registered is model_cls or (isinstance(registered, (tuple, list)) and model_cls in registered):
            found.append(name)
    for name in (*_PREFERRED_AUTO, *sorted(n for n in found if n != "AutoModel"), "AutoModel"):
        if name in found:
            return name
    fallback = "AutoModelForCausalLM" if issubclass(model_cls, GenerationMixin) else "AutoModel"
    logger.info("%s is not registered with a transformers Auto class for %s; exporting it as %s",
                model_cls.__name__, config_cls.__name__, fallback)
    return fallback


@contextlib.contextmanager
def _transformers_code_copy_disabled(classes: Sequence[type]) -> Iterator[None]:
    """Let ``save_pretrained`` skip its own copy of the code (``custom_object_save``): it copies only same-folder
    relative imports and fails on ``from ..x import y``; the export writes the vendored files itself."""
    missing = object()
    saved = [(cls, cls.__dict__.get("_auto_class", missing)) for cls in classes]
    try:
        for cls, _ in saved:
            cls._auto_class = None
        yield
    finally:
        for cls, old in saved:
            if old is missing:
                delattr(cls, "_auto_class")
            else:
                cls._auto_class = old


def _update_json(path: Path, update: Any) -> None:
    data = json.loads(path.read_text(encoding="utf-8"))
    update(data)
    path.write_text(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")


def _check_export_directory(save_directory: Any, overwrite: bool) -> Path:
    """The export folder, refused when it is empty/``.``, the current folder, a file, or (without ``overwrite``) a
    non-empty folder: an export next to unrelated files would mix them into the upload."""
    if not isinstance(save_directory, str | os.PathLike):
        raise TypeError(f"save_directory must be a path (str or os.PathLike), got {type(save_directory).__name__}")
    if not isinstance(overwrite, bool):
        raise TypeError(f"overwrite must be True or False, got {overwrite!r}")
    text = os.fspath(save_directory)
    if not str(text).strip():
        raise ValueError(f"save_directory must name a folder for the export, got {text!r} (an empty path would "
                         "write into the current folder)")
    path = Path(text).expanduser()
    if path.resolve() == Path.cwd().resolve():
        raise ValueError(f"save_directory {text!r} is the current folder; export into a folder of its own, e.g. "
                         "'./my-model'")
    if path.exists() and not path.is_dir():
        raise ValueError(f"save_directory {text!r} exists and is not a folder")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise ValueError(f"save_directory {text!r} is not empty; pass overwrite=True to replace the export's files "
                         "there (other files are left alone), or choose a new folder")
    return path


def export_for_hub(obj: PreTrainedModel, save_directory: str | os.PathLike, *, card: ModelCard | None = None,
                   tokenizer: PreTrainedTokenizerBase | None = None, safe_serialization: bool = True,
                   overwrite: bool = False) -> Path:
    """Save a transformers model (and tokenizer) as a self-contained remote-code checkpoint.

    Steps:

    1. Classes not defined by transformers get an ``auto_map`` entry for their Auto class: the config for
       ``AutoConfig``, the model for the Auto class it is registered under for its config in transformers' auto
       mappings (else ``AutoModelForCausalLM`` if it is a ``GenerationMixin``, else ``AutoModel``), a custom
       tokenizer for ``AutoTokenizer``.
    2. ``save_pretrained`` writes ``model.safetensors``, ``config.json`` and the generation config; ``auto_map``
       is added to the written ``config.json`` (and ``tokenizer_config.json``), never to the live config, and no
       class is registered (``register_for_auto_class``), so a later plain ``save_pretrained`` writes no code.
    3. The modules defining those classes are written next to the weights together with every ``hf_ext``
       module they import, transitively (``from hf_ext.core.x import y``, ``import hf_ext.core.x as z``,
       ``from ..core.x import y``, ``from .x import y``), flattened into the folder with those import statements
       rewritten to same-folder relative imports. Other imports (torch, transformers …) are left alone.
    4. ``card`` (if any) is saved as ``README.md``.

    Everything is written through :func:`hf_ext.utils.saving.atomic_directory`: an interrupted export leaves the
    previous one (or a clear error on load), never a mix.

    The folder then loads with ``AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)`` where
    hf_ext is not installed (upload it with ``huggingface_hub.upload_folder``). A module that imports an hf_ext
    module by a string (``importlib.import_module("hf_ext…")``, ``"hf_ext.x:Name"``) is refused at export time
    (``ValueError``) instead of failing at reload with ``No module named 'hf_ext…'``.

    Args:
        obj: a ``transformers.PreTrainedModel``.
        save_directory: output folder (created). Not ``""``, ``"."`` or the current folder.
        overwrite: allow a non-empty ``save_directory`` (the export's files replace those of the same names;
            other files are left alone). Default ``False``: a non-empty folder is refused.
        card: optional ``huggingface_hub.ModelCard`` (e.g. from :func:`render_model_card`).
        tokenizer: optional tokenizer (``PreTrainedTokenizerBase``) saved alongside.
        safe_serialization: must be True: weights are always written as safetensors, never pickled.

    Returns:
        ``Path(save_directory)``.

    Raises:
        TypeError: ``obj`` is not a ``PreTrainedModel`` (or ``tokenizer``/``card`` have the wrong type).
        ValueError: the code cannot be made self-contained: an exported file imports an hf_ext package
            ``__init__`` (``from hf_ext import register``) or a module by a string, or two modules would flatten
            to the same file name; or ``safe_serialization=False``; or ``save_directory`` is empty, the current
            folder, a file, or a non-empty folder without ``overwrite=True``. Nothing is written in these cases.

    Example:
        >>> from hf_ext.hub import export_for_hub, render_model_card
        >>> card = render_model_card("base", card_data={"license": "apache-2.0"})
        >>> path = export_for_hub(tiny_causal_lm("llama", seed=0), "tiny-llama", card=card, tokenizer=tiny_tokenizer())
        >>> sorted(p.name for p in path.iterdir())  # a transformers model: no code to vendor
        ['README.md', 'config.json', 'generation_config.json', 'hf_ext_manifest.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json']

        An hf_ext model (``ScarModel``, ``MADStackForCausalLM`` …) with ``render_model_card(..., remote_code=True)``
        also gets its modules, e.g. ``configuration_scar.py``, ``inputs.py``, ``modeling_scar.py``.
    """
    from huggingface_hub import ModelCard
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    if not isinstance(obj, PreTrainedModel):
        raise TypeError(f"export_for_hub needs a transformers PreTrainedModel, got "
                        f"{type(obj).__module__}.{type(obj).__qualname__}")
    if tokenizer is not None and not isinstance(tokenizer, PreTrainedTokenizerBase):
        raise TypeError(f"tokenizer must be a transformers tokenizer (PreTrainedTokenizerBase), got "
                        f"{type(tokenizer).__module__}.{type(tokenizer).__qualname__}")
    if card is not None and not isinstance(card, ModelCard):
        raise TypeError(f"card must be a huggingface_hub.ModelCard (see render_model_card), got {type(card).__name__}")
    if not safe_serialization:
        raise ValueError("safe_serialization=False is not supported: exports write safetensors only (transformers 5 "
                         "has no pickle format, and hf_ext never writes pickles)")
    save_directory = _check_export_directory(save_directory, overwrite)

    config = obj.config
    custom: list[tuple[type, str]] = []  # (class, Auto class) for every class that needs remote code
    if not _is_builtin(type(config)):
        custom.append((type(config), "AutoConfig"))
    if not _is_builtin(type(obj)):
        custom.append((type(obj), _model_auto_class(type(obj), type(config))))
    if tokenizer is not None and not _is_builtin(type(tokenizer)):
        custom.append((type(tokenizer), "AutoTokenizer"))
    for cls, _ in custom:
        if cls.__module__ == "__main__":
            raise ValueError(f"{cls.__name__} is defined in __main__; move it to an importable module file so that "
                             "its code can be exported")

    files = vendor_sources([cls.__module__ for cls, _ in custom])  # fails before anything is written

    def ref(cls: type) -> str:
        return f"{cls.__module__.rpartition('.')[2]}.{cls.__name__}"

    auto_map = {auto: ref(cls) for cls, auto in custom if auto != "AutoTokenizer"}
    stale = sorted(p.name for p in save_directory.glob("*.py") if p.name not in files)
    if stale:
        logger.warning("%s already holds code files that this export does not write: %s", save_directory, stale)
    with atomic_directory(save_directory, prune=True) as staging:
        with _transformers_code_copy_disabled([cls for cls, _ in custom]):
            obj.save_pretrained(staging)
            if tokenizer is not None:
                tokenizer.save_pretrained(staging)
        if auto_map:  # into the written file only: the live config keeps no auto_map
            _update_json(staging / "config.json", lambda cfg: cfg.update(
                auto_map={**(cfg.get("auto_map") or {}), **auto_map}))
        tok_cls = type(tokenizer)
        if tokenizer is not None and not _is_builtin(tok_cls):
            entry = [None, ref(tok_cls)] if tok_cls.__name__.endswith("Fast") else [ref(tok_cls), None]
            _update_json(staging / "tokenizer_config.json", lambda cfg: cfg.update(
                auto_map={**(cfg.get("auto_map") or {}), "AutoTokenizer": entry}))
        for name, text in files.items():
            (staging / name).write_text(text, encoding="utf-8")
        if card is not None:
            card.save(staging / "README.md")
    logger.info("exported %s to %s (code files: %s)", type(obj).__name__, save_directory, sorted(files))
    return save_directory
