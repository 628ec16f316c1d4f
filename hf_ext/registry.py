"""The component registry: each component declares itself once, in its package's ``__init__``.

A component (``hf_ext.scar``, ``hf_ext.diffusion.sld`` … or a package outside hf_ext) calls
:func:`register_component` with what it brings: the transformers model types to register with the ``Auto*`` classes,
its ``hf-ext`` command group, its tour step, its model-card templates, the pip extras it needs and its notebook.
:mod:`hf_ext.auto`, :mod:`hf_ext.cli` and :mod:`hf_ext.tour` read the registry; nothing else lists components.
Everything is declared as dotted paths, so registering imports nothing heavy: ``import hf_ext.scar`` stays free of
torch and transformers. The components of hf_ext are found by importing every package under ``hf_ext``
(:func:`discover`); a package elsewhere registers when it is imported, and :func:`discover` imports the packages that
installed distributions name in the entry-point group ``hf_ext.components`` (so ``hf-ext`` finds their commands).

``order`` is the component's place in the one canonical order (the README's): the CLI groups, the tour steps and
:func:`components` follow it.

Example:
    >>> from hf_ext.registry import components, register_component, unregister_component
    >>> [c.name for c in components()][:3]
    ['core', 'scar', 'tfree']
    >>> comp = register_component(name="doc_toy", title="Doc toy", order=990, package="doc_toy", cli=".cli")
    >>> comp.cli  # relative module paths are resolved against ``package``
    'doc_toy.cli'
    >>> unregister_component("doc_toy")
"""

from __future__ import annotations

import importlib
import pkgutil
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from .utils.logging import get_logger

__all__ = ["ENTRY_POINT_GROUP", "AutoClasses", "Component", "components", "discover", "get_component", "on_register",
           "register_component", "registered_components", "unregister_component"]

logger = get_logger(__name__)

_NAME = re.compile(r"[a-z][a-z0-9_]*\Z")
_PATH = re.compile(r"\.?[A-Za-z_][A-Za-z0-9_.]*\Z")
_CLASS_PATH = re.compile(r"\.?[A-Za-z_][A-Za-z0-9_.]*:[A-Za-z_][A-Za-z0-9_]*\Z")


@dataclass(frozen=True)
class AutoClasses:
    """One transformers model type: the classes to register with ``AutoConfig``, ``AutoModel*`` and ``AutoTokenizer``.

    Paths are ``"module:Class"``; a module starting with ``.`` is relative to the component's package. Composite
    models name their decoder config in ``get_text_config`` so that ``generate()`` finds it.

    Attributes:
        model_type: the ``config.model_type`` key, e.g. ``"umup_llama"``.
        config: the config class, e.g. ``".configuration_umup:UMupConfig"``.
        models: Auto class name -> model class, e.g. ``{"AutoModelForCausalLM": ".modeling_umup:UMupLlamaForCausalLM"}``.
        tokenizer: a tokenizer class registered with ``AutoTokenizer`` for this config, or ``None``.
    """

    model_type: str
    config: str
    models: Mapping[str, str] = field(default_factory=dict)
    tokenizer: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.model_type, str) or not self.model_type:
            raise ValueError(f"AutoClasses.model_type must be a non-empty string, got {self.model_type!r}")
        for what, path in [("config", self.config), *((f"models[{k!r}]", v) for k, v in self.models.items()),
                           *([("tokenizer", self.tokenizer)] if self.tokenizer is not None else [])]:
            if not isinstance(path, str) or not _CLASS_PATH.match(path):
                raise ValueError(f"AutoClasses({self.model_type!r}).{what} = {path!r} is not a 'module:Class' path "
                                 "(e.g. '.modeling_x:XForCausalLM')")
        for auto_name in self.models:
            if not (isinstance(auto_name, str) and auto_name.startswith("Auto")):
                raise ValueError(f"AutoClasses({self.model_type!r}).models key {auto_name!r} is not a transformers "
                                 "Auto class name (e.g. 'AutoModelForCausalLM')")
        object.__setattr__(self, "models", MappingProxyType(dict(self.models)))

    def modules(self) -> list[str]:
        """The modules that define the classes."""
        paths = [self.config, *self.models.values(), *([self.tokenizer] if self.tokenizer else [])]
        return sorted({p.partition(":")[0] for p in paths})

    def _absolute(self, package: str) -> AutoClasses:
        return AutoClasses(self.model_type, _absolute(self.config, package),
                           {k: _absolute(v, package) for k, v in self.models.items()},
                           _absolute(self.tokenizer, package) if self.tokenizer else None)


@dataclass(frozen=True)
class Component:
    """A registered component: see :func:`register_component` for the fields."""

    name: str
    title: str
    order: int
    package: str
    summary: str = ""
    auto: tuple[AutoClasses, ...] = ()
    cli: str | None = None
    tour: str | None = None
    cards: tuple[str, ...] = ()
    extras: tuple[str, ...] = ()
    notebook: str | None = None
    reproduction: str | None = None


_COMPONENTS: dict[str, Component] = {}
_LISTENERS: list[Callable[[Component], None]] = []
_lock = threading.RLock()
_discovered = False

#: Entry-point group naming the component packages of other distributions (``name = "package"``).
ENTRY_POINT_GROUP = "hf_ext.components"


def _absolute(path: str, package: str) -> str:
    return package + path if path.startswith(".") else path


def register_component(
    *,
    name: str,
    title: str,
    order: int,
    package: str,
    summary: str = "",
    auto: Iterable[AutoClasses] = (),
    cli: str | None = None,
    tour: str | None = None,
    cards: Iterable[str] = (),
    extras: Iterable[str] = (),
    notebook: str | None = None,
    reproduction: str | None = None,
) -> Component:
    """Register a component (call it at the end of the component package's ``__init__``).

    Args:
        name: unique lowercase id (``[a-z][a-z0-9_]*``), also the ``hf-ext`` command group's name.
        title: the heading of its docs page ``docs/components/<page>.md`` and its row in the README's component
            table (``"SCAR"``, ``"FDTM/SDTM"``).
        order: its place in the canonical order (the README's); unique among components.
        package: the package's ``__name__``; module paths starting with ``.`` are relative to it.
        summary: one line, shown by ``hf-ext --help``.
        auto: the transformers model types it defines (:class:`AutoClasses`), registered when transformers is imported.
        cli: module with ``add_parser(subparsers)`` adding the ``hf-ext <name>`` group (standard-library imports only
            at module level, so that ``hf-ext --help`` imports no torch).
        tour: module whose import registers its tour step(s) with :func:`hf_ext.tour.tour_step` (same rule).
        cards: names of its model-card templates (``model_cards/<card>.md.j2``).
        extras: the ``pip install 'hf-ext[...]'`` extras its optional features need.
        notebook: its notebook file name in ``notebooks/``.
        reproduction: module with ``run(model, *, quick, progress, **settings) -> Report``, the paper's claims measured
            on real checkpoints (``hf-ext reproduce <name>``, :mod:`hf_ext.reproduce`).

    Returns:
        The :class:`Component`, with absolute module paths.

    Raises:
        ValueError: a malformed name or path, or a name, order or model type that another package registered.
        TypeError: an ``auto`` entry that is not an :class:`AutoClasses`.
    """
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"component name {name!r} is not valid; use lowercase letters, digits and '_' "
                         "(starting with a letter), e.g. 'scar'")
    if not isinstance(order, int) or isinstance(order, bool):
        raise TypeError(f"component {name!r}: order must be an int (its place in the README's order), got {order!r}")
    if not isinstance(package, str) or not package:
        raise ValueError(f"component {name!r}: package must be the package's __name__, got {package!r}")
    if not title:
        raise ValueError(f"component {name!r} needs a title (its README section heading)")
    auto = tuple(auto)
    for entry in auto:
        if not isinstance(entry, AutoClasses):
            raise TypeError(f"component {name!r}: auto entries must be AutoClasses, got {type(entry).__name__}")
    for what, path in (("cli", cli), ("tour", tour), ("reproduction", reproduction)):
        if path is not None and (not isinstance(path, str) or not _PATH.match(path)):
            raise ValueError(f"component {name!r}: {what}={path!r} is not a module path (e.g. '.cli')")
    component = Component(
        name=name, title=title, order=order, package=package, summary=summary,
        auto=tuple(entry._absolute(package) for entry in auto),
        cli=_absolute(cli, package) if cli else None, tour=_absolute(tour, package) if tour else None,
        cards=tuple(cards), extras=tuple(extras), notebook=notebook,
        reproduction=_absolute(reproduction, package) if reproduction else None,
    )
    with _lock:
        for other in _COMPONENTS.values():
            if other.package == package and other.name == name:
                continue  # the same package again (a module reload): replaced below
            clash = ("name" if other.name == name else "order" if other.order == order else
                     "model type" if {a.model_type for a in auto} & {a.model_type for a in other.auto} else None)
            if clash:
                raise ValueError(f"component {name!r} ({package}): its {clash} is already registered by component "
                                 f"{other.name!r} ({other.package}, order {other.order}); pick another {clash}")
        _COMPONENTS[name] = component
        listeners = list(_LISTENERS)
    for listener in listeners:
        listener(component)
    return component


def unregister_component(name: str) -> None:
    """Remove the component ``name`` (no error if absent); what it already registered elsewhere stays."""
    with _lock:
        _COMPONENTS.pop(name, None)


def on_register(listener: Callable[[Component], None]) -> None:
    """Call ``listener(component)`` for every component registered from now on (e.g. :mod:`hf_ext.auto`)."""
    with _lock:
        if listener not in _LISTENERS:
            _LISTENERS.append(listener)


def discover() -> None:
    """Import every package under ``hf_ext`` once (cheap: package ``__init__`` files import no torch), so that the
    components of hf_ext register, then the packages of the ``hf_ext.components`` entry points. A package of hf_ext
    that registers no component is searched for sub-packages (``hf_ext.diffusion`` holds ``sld``, ``multifusion``,
    ``mvader``). A package that fails to import is logged and skipped: one broken component must not hide the others."""
    global _discovered
    with _lock:
        if _discovered:
            return
        _discovered = True
        _discover_under(importlib.import_module("hf_ext"))
        from importlib.metadata import entry_points  # here, not at module level: it is slow to import

        for entry_point in entry_points(group=ENTRY_POINT_GROUP):
            _import_logged(entry_point.value)


def _import_logged(name: str):
    try:
        return importlib.import_module(name)
    except Exception as err:  # noqa: BLE001 - see discover()
        logger.error("could not import %s while looking for components: %s: %s", name, type(err).__name__, err)
        return None


def _discover_under(package) -> None:
    for info in pkgutil.iter_modules(package.__path__, package.__name__ + "."):
        if not info.ispkg:
            continue
        sub = _import_logged(info.name)
        if sub is not None and not any(c.package == info.name for c in _COMPONENTS.values()):
            _discover_under(sub)


def registered_components() -> list[Component]:
    """The components registered so far (without :func:`discover`), in canonical order."""
    with _lock:
        return sorted(_COMPONENTS.values(), key=lambda c: (c.order, c.name))


def components() -> list[Component]:
    """Every component (hf_ext's, after :func:`discover`, and any other package's already imported), in canonical order."""
    discover()
    return registered_components()


def get_component(name: str) -> Component:
    """The component ``name``.

    Raises:
        KeyError: no such component; the message lists the registered ones.
    """
    for component in components():
        if component.name == name:
            return component
    raise KeyError(f"no component {name!r}; registered: {[c.name for c in components()]}")
