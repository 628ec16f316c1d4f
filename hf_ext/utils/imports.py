"""Lazy imports: a package's public names resolved on first use, and optional dependencies that name their extra.

``import hf_ext`` and ``import hf_ext.<component>`` stay cheap (no torch, no transformers): a package's
``__init__`` declares which submodule defines each public name with :func:`lazy_exports`, and the submodule is
imported when the name is first looked up (PEP 562). Heavy optional dependencies are imported inside the
functions that need them with :func:`require`, whose error names the ``pip install 'hf-ext[extra]'`` to run.

Example:
    >>> __getattr__, __dir__, __all__ = lazy_exports("hf_ext.dtm", {"int8": ["quantize_absmax"]})
    >>> __all__
    ['quantize_absmax']
    >>> require("json").dumps([1])
    '[1]'
"""

from __future__ import annotations

import functools
import importlib
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from types import ModuleType
from typing import Any

__all__ = ["DISTRIBUTIONS", "extra_for", "lazy_exports", "missing_from_extra", "require"]

#: Import name -> distribution name, where they differ (pip treats ``_`` and ``-`` alike).
DISTRIBUTIONS: dict[str, str] = {
    "sklearn": "scikit-learn",
    "PIL": "pillow",
    "profanity_check": "alt-profanity-check",
    "importlinter": "import-linter",
}


def lazy_exports(
    package: str, exports: Mapping[str, Iterable[str]], *, submodules: Iterable[str] = ()
) -> tuple[Callable[[str], Any], Callable[[], list[str]], list[str]]:
    """Module-level ``__getattr__``, ``__dir__`` and ``__all__`` that import each public name on first access.

    Args:
        package: the package's ``__name__``.
        exports: submodule (relative to ``package``; dots for deeper ones) -> the public names it defines.
        submodules: submodules that are public names themselves (``hf_ext.moral.evaluation`` as ``moral.evaluation``).

    Returns:
        ``(__getattr__, __dir__, __all__)`` to assign in the package's ``__init__``. A resolved name is cached in the
        package's namespace, so the lookup runs once.

    Raises:
        ValueError: a name listed under two submodules.

    Example:
        >>> getattr_, dir_, all_ = lazy_exports("hf_ext.dtm", {"int8": ["quantize_absmax"]})
        >>> getattr_("quantize_absmax").__name__
        'quantize_absmax'
        >>> getattr_("nope")
        Traceback (most recent call last):
        ...
        AttributeError: module 'hf_ext.dtm' has no attribute 'nope'
    """
    where: dict[str, str] = {}
    for submodule, names in exports.items():
        for name in names:
            if name in where:
                raise ValueError(f"lazy_exports({package!r}): {name!r} is listed under both {where[name]!r} and "
                                 f"{submodule!r}; each public name has one defining submodule")
            where[name] = submodule
    public_submodules = tuple(submodules)
    names_all = sorted([*where, *public_submodules])

    def __getattr__(name: str) -> Any:
        if name in where:
            value = getattr(_import(f"{package}.{where[name]}", name), name)
        elif name in public_submodules:
            value = _import(f"{package}.{name}", name)
        else:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(names_all))

    return __getattr__, __dir__, names_all


def _import(module: str, name: str) -> ModuleType:
    """Import ``module`` for the public name ``name``; a missing third-party package names its hf-ext extra."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as err:
        missing = err.name or ""
        if not missing or missing.split(".")[0] == module.split(".")[0]:
            raise  # a module of the package itself: a bug, not a missing extra
        extra, distribution = extra_for(missing)
        hint = f"pip install 'hf-ext[{extra}]'" if extra else f"pip install {distribution}"
        raise ModuleNotFoundError(f"{module.rpartition('.')[0]}.{name} needs {missing!r}, which is not installed: "
                                  f"{hint}", name=missing) from err


@functools.lru_cache(maxsize=1)
def _extras_of_distributions() -> dict[str, str]:
    """Distribution -> the hf-ext extra that installs it, read from the installed hf-ext metadata (pyproject.toml)."""
    import importlib.metadata  # not at module level: it costs more than the rest of `import hf_ext`

    try:
        requirements = importlib.metadata.requires("hf-ext") or []
    except importlib.metadata.PackageNotFoundError:  # a checkout on sys.path, not installed
        return {}
    found: dict[str, str] = {}
    for requirement in requirements:
        name = re.match(r"[A-Za-z0-9._-]+", requirement)
        extra = re.search(r"extra\s*==\s*['\"]([^'\"]+)['\"]", requirement)
        if name and extra and extra.group(1) != "all":
            found.setdefault(_normalise(name.group(0)), extra.group(1))
    return found


def _normalise(distribution: str) -> str:
    return re.sub(r"[-_.]+", "-", distribution).lower()


def missing_from_extra(extra: str) -> list[str]:
    """The distributions of the hf-ext extra ``extra`` that are not installed (from the installed hf-ext metadata).

    Example:
        >>> missing_from_extra("no-such-extra")
        []
    """
    import importlib.metadata

    missing = []
    for distribution, its_extra in _extras_of_distributions().items():
        if its_extra != extra:
            continue
        try:
            importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            missing.append(distribution)
    return missing


def extra_for(module: str) -> tuple[str | None, str]:
    """``(extra, distribution)`` that provide the import ``module``; ``extra`` is ``None`` outside hf-ext's extras.

    Example:
        >>> extra_for("diffusers.pipelines")
        ('diffusion', 'diffusers')
    """
    top = module.split(".")[0]
    distribution = DISTRIBUTIONS.get(top, top)
    return _extras_of_distributions().get(_normalise(distribution)), distribution


def require(module: str, *, distribution: str | None = None, alternative: str | None = None) -> ModuleType:
    """Import ``module`` or raise an ``ImportError`` naming the hf-ext extra (or package) that provides it.

    Args:
        module: a dotted import name, e.g. ``"matplotlib.pyplot"``.
        distribution: the pip distribution, where it is not the import name (default: :data:`DISTRIBUTIONS`).
        alternative: what the caller can do instead of installing, appended to the message
            (e.g. ``"pass scorer=<callable>"``).

    Raises:
        ImportError: the module cannot be imported; the message says ``pip install 'hf-ext[<extra>]'`` for a
            dependency of an hf-ext extra, else ``pip install <distribution>``.

    Example:
        >>> plt = require("matplotlib.pyplot")
    """
    try:
        return importlib.import_module(module)
    except ImportError as err:
        extra, default_distribution = extra_for(module)
        hint = f"pip install 'hf-ext[{extra}]'" if extra else f"pip install {distribution or default_distribution}"
        instead = f", or {alternative}" if alternative else ""
        raise ImportError(f"{module!r} is needed for this feature but could not be imported ({err}); "
                          f"install it with: {hint}{instead}") from err
