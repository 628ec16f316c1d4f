"""Every ``AutoConfig`` / ``AutoModel*`` / ``AutoTokenizer`` registration of hf_ext, in one place.

``import hf_ext`` must stay fast, and importing transformers costs seconds (it imports torch), so the
registration runs when transformers is imported: at once if it already is, otherwise through a one-shot
post-import hook. Call :func:`register` to force it. Registering is idempotent.

Each component adds one :class:`Registration` to :data:`REGISTRATIONS`. Composite models must name their
decoder config so that ``generate()`` finds it (``get_text_config``).

Example:
    >>> import hf_ext, transformers
    >>> hf_ext.register()  # explicit; normally automatic
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import threading
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Registration:
    """One model type: dotted ``"module:Class"`` paths, imported only when transformers is.

    Attributes:
        model_type: the ``config.model_type`` key.
        config: ``"hf_ext.x.configuration_x:XConfig"``.
        models: Auto class name -> model path, e.g. ``{"AutoModelForCausalLM": "hf_ext.x.modeling_x:XForCausalLM"}``.
        tokenizer: optional tokenizer class path registered with ``AutoTokenizer``.
    """

    model_type: str
    config: str
    models: dict[str, str] = field(default_factory=dict)
    tokenizer: str | None = None


#: Components append their entry here (keep this the only place that registers with transformers).
REGISTRATIONS: list[Registration] = []
REGISTRATIONS.append(Registration(  # u-μP (issue 4)
    model_type="umup_llama",
    config="hf_ext.umup.configuration_umup:UMupConfig",
    models={"AutoModelForCausalLM": "hf_ext.umup.modeling_umup:UMupLlamaForCausalLM",
            "AutoModel": "hf_ext.umup.modeling_umup:UMupLlamaModel"},
))
REGISTRATIONS.append(Registration(  # MAD striped hybrids (issue 5)
    model_type="mad_stack",
    config="hf_ext.mad.models:MADStackConfig",
    models={"AutoModelForCausalLM": "hf_ext.mad.models:MADStackForCausalLM",
            "AutoModel": "hf_ext.mad.models:MADStackModel"},
))
REGISTRATIONS.append(Registration(  # T-FREE (issue 3); the backbone is TFreeConfig.text_config (get_text_config)
    model_type="tfree",
    config="hf_ext.tfree.configuration_tfree:TFreeConfig",
    models={"AutoModelForCausalLM": "hf_ext.tfree.modeling_tfree:TFreeForCausalLM"},
    tokenizer="hf_ext.tfree.tokenization_tfree:TFreeTokenizer",
))

REGISTRATIONS.append(Registration(  # SCAR (issue 6): the config names the base model; ScarModel loads it + adapter
    model_type="scar",
    config="hf_ext.scar.configuration_scar:ScarConfig",
    models={"AutoModelForCausalLM": "hf_ext.scar.modeling_scar:ScarModel"},
))

_lock = threading.Lock()
_done = False


def _load(path: str):
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


def register() -> None:
    """Register every hf_ext model type with the transformers Auto classes (idempotent)."""
    global _done
    with _lock:
        if _done:
            return
        _done = True
    if not REGISTRATIONS:
        return
    import transformers

    pending = False
    for reg in REGISTRATIONS:
        try:
            config_cls = _load(reg.config)
            transformers.AutoConfig.register(reg.model_type, config_cls, exist_ok=True)
            for auto_name, model_path in reg.models.items():
                getattr(transformers, auto_name).register(config_cls, _load(model_path), exist_ok=True)
            if reg.tokenizer:
                transformers.AutoTokenizer.register(config_cls, tokenizer_class=_load(reg.tokenizer), exist_ok=True)
        except (AttributeError, ImportError) as err:
            # The first `import transformers` came from a registered module itself (still half-imported): retry
            # on the next register() call, which such a module makes at its end (see hf_ext/umup/modeling_umup.py).
            if "partially initialized" not in str(err):
                raise
            pending = True
    if pending:
        with _lock:
            _done = False


class _AfterTransformersImport(importlib.abc.MetaPathFinder):
    """Runs :func:`register` right after ``transformers`` has been imported, then removes itself."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "transformers":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None:
            return spec
        loader = spec.loader
        exec_module = loader.exec_module

        def exec_then_register(module):
            exec_module(module)
            register()

        loader.exec_module = exec_then_register
        return spec


def _register_lazily() -> None:
    if not REGISTRATIONS:
        return
    if "transformers" in sys.modules:
        register()
    elif not any(isinstance(f, _AfterTransformersImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _AfterTransformersImport())
