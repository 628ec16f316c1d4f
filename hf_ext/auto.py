"""Registers the components' model types (:class:`hf_ext.registry.AutoClasses`) with the transformers Auto classes.

``import hf_ext`` must stay fast and importing transformers costs seconds, so the registration runs when
transformers is imported: at once if it already is, otherwise right after its import, through a finder on
``sys.meta_path``. A component registered later (a package outside hf_ext) is registered as soon as it declares
itself. Call :func:`register` to force it; it is idempotent.

A module that defines one of the classes may itself be what imported transformers; it is then still executing, so
its model type waits, and the same finder re-runs :func:`register` when that module's import finishes. No modeling
module has to call anything at its end.

Example:
    >>> import hf_ext, transformers
    >>> hf_ext.register()  # explicit; normally automatic
    >>> transformers.AutoConfig.for_model("umup_llama").model_type
    'umup_llama'
"""

from __future__ import annotations

import importlib
import importlib.abc
import sys
import threading

from .registry import AutoClasses, Component, components, on_register, registered_components
from .utils.deprecation import DeprecatedList

__all__ = ["register"]

_lock = threading.Lock()
_running = False
_done: set[str] = set()  # model types registered with transformers
_watch: frozenset[str] = frozenset()  # see _refresh_watch; read without a lock by the finder
_executed: set[str] = set()  # watched modules whose code has run (importlib marks them initializing a little longer)
_legacy: list[AutoClasses] = []  # appended to the deprecated REGISTRATIONS list


def _load(path: str):
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


def _initializing(entry: AutoClasses) -> bool:
    """Whether a module defining one of the classes is being executed right now (its names are not all there yet)."""
    for name in entry.modules():
        module = sys.modules.get(name)
        if (module is not None and name not in _executed
                and getattr(getattr(module, "__spec__", None), "_initializing", False)):
            return True
    return False


def _entries(discover: bool) -> list[AutoClasses]:
    found = components() if discover else registered_components()
    return [entry for component in found for entry in component.auto] + list(_legacy)


def register() -> None:
    """Register every component's model types with the transformers Auto classes (idempotent).

    Imports transformers and the modules that define the classes. A model type whose module is still being
    imported is left for the end of that import (see the module docstring).
    """
    global _running
    with _lock:
        if _running:  # called again from a module that this call is importing: the outer call goes on
            return
        _running = True
    try:
        import transformers

        for entry in _entries(discover=True):
            if entry.model_type in _done or _initializing(entry):
                continue
            config_cls = _load(entry.config)
            transformers.AutoConfig.register(entry.model_type, config_cls, exist_ok=True)
            for auto_name, model_path in entry.models.items():
                getattr(transformers, auto_name).register(config_cls, _load(model_path), exist_ok=True)
            if entry.tokenizer:
                transformers.AutoTokenizer.register(config_cls, tokenizer_class=_load(entry.tokenizer), exist_ok=True)
            _done.add(entry.model_type)
    finally:
        with _lock:
            _running = False
        _refresh_watch()


def _refresh_watch() -> None:
    """Recompute the modules whose import ends with :func:`register`: those of every model type not registered yet
    (transformers itself is watched until it is imported)."""
    global _watch
    _watch = frozenset(name for entry in _entries(discover=False) if entry.model_type not in _done
                       for name in entry.modules())


class _RegisterAfterImport(importlib.abc.MetaPathFinder):
    """Wraps the loader of the watched modules (:func:`_refresh_watch`) so that :func:`register` runs after their import."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in _watch and not (fullname == "transformers" and fullname not in sys.modules):
            return None
        for finder in sys.meta_path:  # the real spec, from the finders after this one
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        loader = spec.loader
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        exec_module = loader.exec_module

        def exec_then_register(module):
            exec_module(module)
            _executed.add(module.__name__)
            register()

        loader.exec_module = exec_then_register
        return spec


def _on_component(component: Component) -> None:
    if not component.auto:
        return
    _refresh_watch()
    if "transformers" in sys.modules:
        register()


def _register_lazily() -> None:
    """Install the finder (once) and register at once if transformers is already imported (``import hf_ext`` does this)."""
    on_register(_on_component)
    if not any(isinstance(f, _RegisterAfterImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _RegisterAfterImport())
    if "transformers" in sys.modules:
        register()


def _legacy_append(entry) -> None:
    if not isinstance(entry, AutoClasses):
        raise TypeError(f"REGISTRATIONS entries must be AutoClasses (Registration), got {type(entry).__name__}")
    _legacy.append(entry)
    _refresh_watch()
    if "transformers" in sys.modules:
        register()


#: Deprecated (0.2): use ``register_component(auto=[AutoClasses(...)])``.
REGISTRATIONS: list[AutoClasses] = DeprecatedList(
    old="hf_ext.auto.REGISTRATIONS", new="register_component(auto=[AutoClasses(...)]) in the component's __init__ "
    "(CONTRIBUTING.md)", on_append=_legacy_append)
#: Deprecated (0.2) name of :class:`hf_ext.registry.AutoClasses` (same fields).
Registration = AutoClasses
